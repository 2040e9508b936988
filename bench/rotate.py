"""Key rotation: `keys rotate hmac` over the mart of N raw messages vs the full transform build
of the same data in the same run (the cost a rotation replaces: a rebuild from raw); and the
encryption re-wrap rate (`keys rotate encryption`) vs a bare pgp_sym_decrypt + pgp_sym_encrypt
over the same vault rows in one statement (the limit).

In a database of its own on the bench's cluster, so that it starts from an empty mart."""

from __future__ import annotations

import os
import secrets
import tempfile
import uuid
from pathlib import Path

import psycopg

from bench import harness, transform
from bench.harness import Result, execute, timed
from ingest import config
from ingest.local.pg_cluster import PgCluster, ensure_database, throwaway_logins
from ingest.schema import bootstrap
from ingest.settings import CommonSettings
from ingest.transform import runner as ingest_transform
from ingest.vault import rotation
from ingest.vault.keys import setting_option


def run(pg: PgCluster, n: int) -> list[Result]:
    name = f"bench_rotate_{uuid.uuid4().hex[:8]}"
    ensure_database(pg.dsn("postgres"), name)
    dsn = pg.dsn(name)
    bootstrap.bootstrap(dsn, logins=throwaway_logins(dsn))
    keys = {name: secrets.token_hex(32) for name in config.KEY_ENVS}
    work = Path(tempfile.mkdtemp(prefix="loginvault-bench-rotate-"))
    env = {
        **keys,
        "LOGINVAULT_TRANSFORMER_DSN": harness.role_dsn(dsn, config.TRANSFORMER_ROLE),
        "DBT_TARGET_PATH": str(work / "target"),
        "DBT_LOG_PATH": str(work / "logs"),
    }
    try:
        with harness.environ(env):
            return _run(dsn, n, keys)
    finally:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run(dsn: str, n: int, keys: dict[str, str]) -> list[Result]:
    transform.load_raw(dsn, n, seed=23)
    with timed() as full:  # as the transform bench measures it: the service's first cycle
        service = ingest_transform.Transformer("incremental")  # as the service runs it
        service.warm(transform.BUILD)
        if service.invoke(transform.BUILD) != 0:
            raise RuntimeError("dbt build failed: see dbt's output above")
    full_s = full()
    execute(dsn, "VACUUM (ANALYZE)")
    execute(dsn, "CHECKPOINT")
    (mart_rows, vault_rows) = execute(
        dsn, "SELECT (SELECT count(*) FROM user_logins), (SELECT count(*) FROM pii.vault)"
    )[0]

    new_hmac, new_enc = secrets.token_hex(32), secrets.token_hex(32)
    os.environ.update(LOGINVAULT_HMAC_KEY=new_hmac, LOGINVAULT_HMAC_KEY_PREVIOUS=keys[config.HMAC_KEY_ENV])
    with timed() as hmac_s:
        rotated = rotation.rotate_hmac(CommonSettings().mart_schema)
    assert rotated and rotated.rows == vault_rows, rotated
    execute(dsn, "CHECKPOINT")

    os.environ.update(
        LOGINVAULT_ENCRYPTION_KEY=new_enc, LOGINVAULT_ENCRYPTION_KEY_PREVIOUS=keys[config.ENCRYPTION_KEY_ENV]
    )
    with timed() as rewrap_s:
        rewrapped = rotation.rotate_encryption()
    assert rewrapped and rewrapped.rows == vault_rows, rewrapped
    bare_s = _bare_rewrap(dsn, new_enc, keys[config.ENCRYPTION_KEY_ENV])
    rewrap_rate, bare_rate = vault_rows / rewrap_s(), vault_rows / bare_s
    figures = {
        "raw_rows": n,
        "mart_rows": mart_rows,
        "vault_rows": vault_rows,
        "full_build_s": round(full_s, 2),
        "rotate_hmac_s": round(hmac_s(), 2),
        "rotate_encryption_s": round(rewrap_s(), 2),
        "rewrap_rows_per_s": round(rewrap_rate),
        "bare_decrypt_encrypt_rows_per_s": round(bare_rate),
        "rewrap_vs_bare": round(rewrap_rate / bare_rate, 3),
    }
    ratio = hmac_s() / full_s
    return [Result("rotate", ratio, "<= 0.5 x full transform build", ratio <= 0.5, figures)]


def _bare_rewrap(dsn: str, new_key: str, old_key: str) -> float:
    """Decrypt with the new key and encrypt again, every vault row, one statement, no writes."""
    options = " ".join(setting_option(f"bench.{name}", value) for name, value in (("new", new_key), ("old", old_key)))
    with psycopg.connect(dsn, autocommit=True, options=options) as conn, timed() as seconds:
        conn.execute(
            "SELECT count(pgp_sym_encrypt(pgp_sym_decrypt(ciphertext, current_setting('bench.new')),"
            " current_setting('bench.old'), 'cipher-algo=aes256, s2k-mode=1')) FROM pii.vault"
        )
    return seconds()
