"""The local stack (`loginvault stack`, `make stack-up`): a PostgreSQL cluster from the system's
binaries and a moto SQS server, both in the background under `.local/`, reused when up.

- network.py: the loopback address and ports
- pg_cluster.py: a PostgreSQL cluster in a directory (also the tests' and benchmarks' throwaway ones)
- moto_server.py: a moto server (SQS over HTTP) and its pid file
- keys_file.py: the local secrets (keys.env, mode 0600)
- stack.py: the stack of one checkout: the environment it exports, up, down, status
- rotate_keys.py: `make rotate-keys`, new local keys and both rotations
"""
