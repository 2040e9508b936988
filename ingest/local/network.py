"""The loopback address the local servers listen on, and its ports: taken, or free."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def port_open(host: str, port: int) -> bool:
    """Whether something accepts connections on host:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    """A port nothing listens on now (the tests' and benchmarks' servers)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port
