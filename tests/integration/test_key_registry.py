"""The key registry is the key administrator's (real PostgreSQL, dbt's own login).

The attack it stops: the transformer registers a junk HMAC key as active, re-hashes the erased
subjects with it and puts the registry back; the erased subjects' hashes are then under a key
nothing uses, and a subject's next message enters the mart. Now the transformer may only read
pii.key_versions; its writers are SECURITY DEFINER functions of the NOLOGIN loginvault_key_admin
that take fingerprints from the session's keys and move versions forward only; the re-hash and
the re-wrap refuse a session key that is not the active one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

import psycopg
import pytest

from conftest import Job, execute, query, role_dsn, send_events
from ingest import config
from ingest.vault import keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORIGIN_MESSAGES = 10
HMAC_ENV, ENC_ENV = config.HMAC_KEY_ENV, config.ENCRYPTION_KEY_ENV
REGISTRY = "SELECT kind, version, fingerprint, state, kind_separated, activated_at, retired_at FROM pii.key_versions ORDER BY 1, 2"
ERASED = (
    "SELECT subject_token, hmac_key_version, ciphertext, encryption_key_version FROM pii.erased_subjects ORDER BY 1"
)


def as_transformer(job: Job, **session_keys: str) -> psycopg.Connection:
    """dbt's own login, acting as the transformer, with `session_keys` (setting name without the
    loginvault. prefix → key) as session settings, as the commands that hold keys set them."""
    options = " ".join(keys.setting_option(f"loginvault.{name}", key) for name, key in session_keys.items())
    conn = psycopg.connect(role_dsn(job.dsn, config.TRANSFORMER_ROLE), autocommit=True, options=options)
    conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
    return conn


def subject_hash(user_id: str, hmac_key: str) -> str:
    """pii.erased_subjects.subject_token of `user_id` under `hmac_key` (kind-separated)."""
    return hmac.new(hmac_key.encode(), f"user_id:{user_id}".encode(), hashlib.sha256).hexdigest()


def add_erased(job: Job, user_id: str, hmac_key: str, hmac_version: int, enc_key: str, enc_version: int) -> None:
    """An erased subject's row as the erasure writes it, under the given keys and versions (as
    the admin: a list an earlier version's rotation left behind)."""
    with psycopg.connect(job.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pii.erased_subjects (subject_token, hmac_key_version, ciphertext, encryption_key_version)"
            " VALUES (%s, %s, pgp_sym_encrypt(%s, %s, 'cipher-algo=aes256, s2k-mode=1'), %s)",
            (subject_hash(user_id, hmac_key), hmac_version, user_id, enc_key, enc_version),
        )


# ---------------------------------------------------------------- no direct write


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO pii.key_versions (kind, version, fingerprint, state) VALUES ('hmac', 9, 'feedfeedfeedfeed', 'pending')",
        "UPDATE pii.key_versions SET state = 'retired' WHERE kind = 'hmac'",
        "UPDATE pii.key_versions SET fingerprint = 'feedfeedfeedfeed' WHERE kind = 'hmac'",
        "DELETE FROM pii.key_versions WHERE kind = 'hmac'",
        "TRUNCATE pii.key_versions",
    ],
)
def test_the_transformer_cannot_write_the_registry(fresh, statement):
    before = query(fresh.dsn, REGISTRY)
    with as_transformer(fresh) as conn:
        assert conn.execute("SELECT count(*) FROM pii.key_versions").fetchone() == (2,)  # it reads it
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    assert query(fresh.dsn, REGISTRY) == before


# The attack: the junk key (the session's) registered as active, the erased subjects re-hashed
# under it, the registry put back.
ATTACK = (
    "UPDATE pii.key_versions SET state = 'previous' WHERE kind = 'hmac' AND state = 'active'",
    "INSERT INTO pii.key_versions (kind, version, fingerprint, state, activated_at) VALUES ('hmac', 2,"
    " loginvault.key_fingerprint('hmac', current_setting('loginvault.hmac_key')), 'active', now())",
    "SELECT pii.rehash_erased_subjects()",
    "DELETE FROM pii.key_versions WHERE kind = 'hmac' AND version = 2",
    "UPDATE pii.key_versions SET state = 'active' WHERE kind = 'hmac' AND version = 1",
)


def test_the_junk_key_attack_leaves_an_erased_subject_out_of_the_mart(fresh):
    """The attack of the issue, with dbt's own login: no junk key gets into the registry, the
    re-hash refuses the junk key, and the erased subject's next message is rejected."""
    subject = f"erase-me-{uuid.uuid4().hex[:8]}"
    events = [{"user_id": subject, "ip": "192.0.2.45"}]
    send_events(fresh, events)
    fresh.run("run", "--wait-time", "1")
    fresh.transform()
    fresh.run("erase", "--user-id", subject, "--reason", "DSAR-17")
    registry, erased = query(fresh.dsn, REGISTRY), query(fresh.dsn, ERASED)
    assert [e[:2] for e in erased] == [(subject_hash(subject, fresh.hmac_key), 1)]

    junk = secrets.token_hex(32)
    with as_transformer(fresh, hmac_key=junk, encryption_key=fresh.env[ENC_ENV]) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            for statement in ATTACK:
                conn.execute(statement)
        with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
            conn.execute("SELECT pii.rehash_erased_subjects()")
    message = str(refused.value).splitlines()[0]
    assert message == (
        "re-hashing the erased subjects refused: the session's hmac key is not the active one (version 1) of pii.key_versions"
    )
    assert junk not in str(refused.value) and keys.fingerprint("hmac", junk) not in str(refused.value)
    assert query(fresh.dsn, REGISTRY) == registry and query(fresh.dsn, ERASED) == erased

    send_events(fresh, events)  # the subject's message again (a replay)
    fresh.run("run", "--wait-time", "1")
    fresh.transform()
    assert query(fresh.dsn, "SELECT count(*) FROM user_logins WHERE user_id = %s", (subject,)) == [(0,)]
    assert query(fresh.dsn, "SELECT count(*) FROM rejected_login_events WHERE reason = 'erased_subject'") == [(1,)]


# ---------------------------------------------------------------- the re-hash and the re-wrap check the session's key


def test_a_rehash_with_a_key_that_is_not_the_active_one_is_refused(fresh):
    """After a rotation, a list left under the old key: the re-hash with any key but the active
    one changes nothing; with the active one it hashes the subject under it."""
    old, new, junk, enc = fresh.hmac_key, secrets.token_hex(32), secrets.token_hex(32), fresh.env[ENC_ENV]
    with as_transformer(fresh, hmac_key=new, hmac_key_previous=old, encryption_key=enc) as conn:
        assert conn.execute("SELECT pii.begin_hmac_rotation()").fetchone() == (2,)
        assert conn.execute("SELECT pii.activate_hmac_key()").fetchone() == (2,)
    add_erased(fresh, "left-behind", old, 1, enc, 1)
    erased = query(fresh.dsn, ERASED)
    for wrong in (junk, old):
        with as_transformer(fresh, hmac_key=wrong, encryption_key=enc) as conn:
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="not the active one \\(version 2\\)"):
                conn.execute("SELECT pii.rehash_erased_subjects()")
        assert query(fresh.dsn, ERASED) == erased
    with as_transformer(fresh, encryption_key=enc) as conn:  # no HMAC key at all
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="LOGINVAULT_HMAC_KEY is missing"):
            conn.execute("SELECT pii.rehash_erased_subjects()")
    with as_transformer(fresh, hmac_key=new, encryption_key=enc) as conn:
        assert conn.execute("SELECT pii.rehash_erased_subjects()").fetchone() == (1,)
    assert [e[:2] for e in query(fresh.dsn, ERASED)] == [(subject_hash("left-behind", new), 2)]


def test_a_rewrap_with_a_key_that_is_not_the_active_one_is_refused(fresh):
    """After an encryption switch, a subject left under the old key: the re-wrap with any key
    but the active one changes nothing; with the active one the id decrypts with it."""
    old, new, junk = fresh.env[ENC_ENV], secrets.token_hex(32), secrets.token_hex(32)
    with as_transformer(fresh, encryption_key=new, encryption_key_previous=old) as conn:
        assert conn.execute("SELECT pii.rotate_encryption_key()").fetchone() == (2,)
    add_erased(fresh, "left-behind", fresh.hmac_key, 1, old, 1)
    erased = query(fresh.dsn, ERASED)
    for wrong in (junk, old):
        with as_transformer(fresh, encryption_key=wrong, encryption_key_previous=old) as conn:
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="re-wrapping the erased subjects refused"):
                conn.execute("SELECT pii.rewrap_erased_subjects()")
        assert query(fresh.dsn, ERASED) == erased
    with as_transformer(fresh, encryption_key=new, encryption_key_previous=old) as conn:
        assert conn.execute("SELECT pii.rewrap_erased_subjects()").fetchone() == (1,)
    with psycopg.connect(fresh.dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pgp_sym_decrypt(ciphertext, %s), encryption_key_version FROM pii.erased_subjects", (new,)
        ).fetchall()
    assert rows == [("left-behind", 2)]


# ---------------------------------------------------------------- forward only


def test_an_old_hmac_key_never_becomes_active_again(fresh):
    h1, h2, enc = fresh.hmac_key, secrets.token_hex(32), fresh.env[ENC_ENV]
    with as_transformer(fresh, hmac_key=h2, hmac_key_previous=h1, encryption_key=enc) as conn:
        conn.execute("SELECT pii.begin_hmac_rotation()")
        conn.execute("SELECT pii.activate_hmac_key()")
    back = {"hmac_key": h1, "hmac_key_previous": h2, "encryption_key": enc}
    with as_transformer(fresh, **back) as conn:
        with pytest.raises(psycopg.Error, match="version 1 is still in its grace period"):
            conn.execute("SELECT pii.begin_hmac_rotation()")
        with pytest.raises(psycopg.Error, match="no HMAC rotation is under way"):
            conn.execute("SELECT pii.activate_hmac_key()")
        assert conn.execute("SELECT pii.retire_key('hmac')").fetchone() == (1,)
        with pytest.raises(
            psycopg.Error, match=r"LOGINVAULT_HMAC_KEY is hmac key version 1 \(retired\): a key is registered once"
        ):
            conn.execute("SELECT pii.begin_hmac_rotation()")
        with pytest.raises(psycopg.Error, match="no previous hmac key to retire"):
            conn.execute("SELECT pii.retire_key('hmac')")
        # The first registration is for a kind with no version at all: nothing here.
        assert conn.execute("SELECT pii.register_first_key('hmac', true)").fetchone() == (None,)
    assert [r[:4] for r in query(fresh.dsn, REGISTRY) if r[0] == "hmac"] == [
        ("hmac", 1, keys.fingerprint("hmac", h1), "retired"),
        ("hmac", 2, keys.fingerprint("hmac", h2), "active"),
    ]


def test_an_old_encryption_key_never_becomes_active_again(fresh):
    e1, e2 = fresh.env[ENC_ENV], secrets.token_hex(32)
    with as_transformer(fresh, encryption_key=e2, encryption_key_previous=e1) as conn:
        assert conn.execute("SELECT pii.rotate_encryption_key()").fetchone() == (2,)
    with as_transformer(fresh, encryption_key=e1, encryption_key_previous=e2) as conn:
        with pytest.raises(psycopg.Error, match="an earlier encryption key is still needed"):
            conn.execute("SELECT pii.rotate_encryption_key()")
        assert conn.execute("SELECT pii.retire_key('encryption')").fetchone() == (1,)
        with pytest.raises(psycopg.Error, match=r"is encryption key version 1 \(retired\): a key is registered once"):
            conn.execute("SELECT pii.rotate_encryption_key()")
    with as_transformer(fresh, encryption_key=secrets.token_hex(32), encryption_key_previous=e1) as conn:
        with pytest.raises(psycopg.Error, match="starts from the active key"):  # e1 is no longer it
            conn.execute("SELECT pii.rotate_encryption_key()")
    assert [r[:4] for r in query(fresh.dsn, REGISTRY) if r[0] == "encryption"] == [
        ("encryption", 1, keys.fingerprint("encryption", e1), "retired"),
        ("encryption", 2, keys.fingerprint("encryption", e2), "active"),
    ]


def test_a_rotation_step_takes_the_fingerprint_from_the_session_key(fresh):
    """The pending version's fingerprint is the session's key's; activating it needs that key."""
    h1, h2, enc = fresh.hmac_key, secrets.token_hex(32), fresh.env[ENC_ENV]
    with as_transformer(fresh, hmac_key=h2, hmac_key_previous=h1, encryption_key=enc) as conn:
        assert conn.execute("SELECT pii.begin_hmac_rotation()").fetchone() == (2,)
        assert conn.execute("SELECT pii.begin_hmac_rotation()").fetchone() == (2,)  # resumed: the same version
    assert query(fresh.dsn, "SELECT fingerprint, state FROM pii.key_versions WHERE kind = 'hmac' AND version = 2") == [
        (keys.fingerprint("hmac", h2), "pending")
    ]
    with as_transformer(fresh, hmac_key=secrets.token_hex(32), hmac_key_previous=h1, encryption_key=enc) as conn:
        with pytest.raises(psycopg.Error, match="under way with another key"):
            conn.execute("SELECT pii.begin_hmac_rotation()")
        with pytest.raises(psycopg.Error, match="not the key of the HMAC rotation to version 2"):
            conn.execute("SELECT pii.activate_hmac_key()")
    with as_transformer(fresh, hmac_key=h2, encryption_key=enc) as conn:  # no previous key: cannot start one
        with pytest.raises(psycopg.Error, match="LOGINVAULT_HMAC_KEY_PREVIOUS is missing"):
            conn.execute("SELECT pii.begin_hmac_rotation()")
    assert query(fresh.dsn, "SELECT version, state FROM pii.key_versions WHERE kind = 'hmac' ORDER BY 1") == [
        (1, "active"),
        (2, "pending"),
    ]


def test_the_first_registration_goes_through_the_key_administrator(fresh):
    """A registry emptied (as the admin) under an existing vault: the build's key check
    (pii.check_keys(true), as dbt's login) registers both keys as version 1, the HMAC key with the
    vault's older token rule (the caller's to tell: the vault is the transformer's, which the key
    administrator's function does not read)."""
    execute(fresh.dsn, "TRUNCATE pii.key_versions")
    with as_transformer(fresh, hmac_key=fresh.hmac_key, encryption_key=fresh.env[ENC_ENV]) as conn:
        conn.execute("SELECT pii.check_keys(true)")
    assert [r[:5] for r in query(fresh.dsn, REGISTRY)] == [
        ("encryption", 1, keys.fingerprint("encryption", fresh.env[ENC_ENV]), "active", True),
        ("hmac", 1, keys.fingerprint("hmac", fresh.hmac_key), "active", False),
    ]


def test_keys_rotate_back_to_a_retired_key_is_refused_in_one_line(fresh):
    h1, h2, previous = fresh.hmac_key, secrets.token_hex(32), keys.PREVIOUS_ENV["hmac"]
    fresh.run("keys", "rotate", "hmac", env={**fresh.env, HMAC_ENV: h2, previous: h1})
    fresh.run("keys", "retire", "hmac", env={**fresh.env, HMAC_ENV: h2})
    registry = query(fresh.dsn, REGISTRY)
    refused = fresh.run("keys", "rotate", "hmac", ok=False, env={**fresh.env, HMAC_ENV: h1, previous: h2})
    assert refused.returncode == 1
    assert refused.error_lines() == [
        "error: key rotation refused: LOGINVAULT_HMAC_KEY is hmac key version 1 (retired): a key is registered once"
        " and never becomes active again"
    ]
    assert query(fresh.dsn, REGISTRY) == registry
