"""Integration: `python -m ingest seed` / `run` against the session's PostgreSQL and moto server over HTTP.

Each test has its own bootstrapped database and queue; `run` is a real subprocess with real dlt loads.
"""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC

import pytest

from conftest import query, role_dsn, run_ingest
from ingest import config
from ingest.consumer.raw_loader import RawLoader
from ingest.local import sample

pytestmark = [pytest.mark.integration]

RUN = ("run", "--wait-time", "1")


def raw_rows(dsn: str) -> list[tuple]:
    return query(dsn, "SELECT message_id, body, receive_count, queue FROM raw.login_events ORDER BY message_id")


def readme_query(table: str) -> str:
    """The README's psql query of `table` (section "dlt's loads")."""
    readme = (config.REPO_ROOT / "README.md").read_text()
    (sql,) = [q for q in re.findall(r'psql "\$PG_DSN" -c "([^"]+)"', readme) if f"FROM {table} " in q]
    return sql


def assert_summary(stderr: str, received: int, landed: int, deleted: int) -> None:
    summary = [line for line in stderr.splitlines() if line.startswith("ingest: ")]
    assert len(summary) == 1, stderr
    assert f"received {received}, landed {landed}, deleted {deleted}," in summary[0]


@pytest.mark.slow
def test_seeded_events_land_verbatim_once_and_leave_the_queue(pg_dsn, sqs_queue, env_for):
    env = env_for(pg_dsn)
    seeded = run_ingest("seed", "--count", "100", env=env)
    assert seeded.returncode == 0, seeded.stderr
    assert sqs_queue.depth() == (100, 0)

    code, _, stderr = run_ingest(*RUN, env=env)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "received 100, landed 100, deleted 100" in stderr

    rows = raw_rows(pg_dsn)
    assert len(rows) == 100
    expected = sorted(sample.to_body(e) for e in sample.synthetic_events(100))
    assert sorted(r[1] for r in rows) == expected
    assert len({r[0] for r in rows}) == 100
    assert {r[2] for r in rows} == {1}
    assert {r[3] for r in rows} == {sqs_queue.name}

    (times,) = query(
        pg_dsn,
        "SELECT count(*) FILTER (WHERE sent_at IS NULL OR received_at IS NULL OR sent_at > received_at),"
        " count(DISTINCT _dlt_id), count(*) FILTER (WHERE _dlt_load_id IS NULL) FROM raw.login_events",
    )
    assert times == (0, 100, 0)
    orphans = query(
        pg_dsn,
        "SELECT count(*) FROM raw.login_events e"
        " WHERE NOT EXISTS (SELECT 1 FROM raw._dlt_loads l WHERE l.load_id = e._dlt_load_id AND l.status = 0)",
    )
    assert orphans == [(0,)]
    # The README's way to inspect dlt's loads (dlt keeps no local state) shows these ones.
    loads = query(pg_dsn, readme_query("raw._dlt_loads"))
    assert loads and {status for _, status, _, _ in loads} == {0}
    assert sum(deliveries for *_, deliveries in loads) == 100
    assert query(pg_dsn, readme_query("raw._dlt_version"))
    assert sqs_queue.depth() == (0, 0)

    code, _, stderr = run_ingest(*RUN, env=env)
    assert code == 0, stderr
    assert_summary(stderr, 0, 0, 0)
    assert len(raw_rows(pg_dsn)) == 100


ODD_BODIES = [
    "not json {",
    '{"foo": "oops_wrong_msg_type", "bar": "123"}',
    '{"user_id": "u-1", "locale": "\\u0000", "device_type": "ios"}',  # a literal \u0000 escape
    '{"user_id": "ü-ß-🙂", "locale": "日本", "ip": "2001:db8::1"}',
    "line one\nline two\r\nline three",
    'quotes "inside", commas, tabs\t, a \\N and a NULL',
    "before\n\\.\nafter",  # COPY's end-of-data marker on a line of its own
    "[1, 2, 3]",
    '"just a string"',
    "   spaces around   ",
]
DICT_EVENT = {"user_id": "dict-user", "ip": "10.0.0.1", "locale": None}


def test_malformed_and_odd_bodies_land_verbatim(pg_dsn, sqs_queue, env_for, tmp_path):
    items = [*ODD_BODIES, DICT_EVENT]
    array_file = tmp_path / "events.json"
    array_file.write_text(json.dumps(items, ensure_ascii=False))
    lines_file = tmp_path / "events.jsonl.gz"
    lines_file.write_bytes(gzip.compress("\n".join(json.dumps(i) for i in items).encode()))

    env = env_for(pg_dsn)
    for path in (array_file, lines_file):
        result = run_ingest("seed", "--file", str(path), env=env)
        assert result.returncode == 0, result.stderr
        assert f"sent {len(items)} messages" in result.stderr
    code, _, stderr = run_ingest(*RUN, env=env)
    assert code == 0, stderr
    assert f"landed {2 * len(items)}" in stderr

    expected = sorted([*ODD_BODIES, sample.to_body(DICT_EVENT)] * 2)
    assert sorted(r[1] for r in raw_rows(pg_dsn)) == expected
    # Byte for byte, not just equal after some normalisation on the way back.
    (octets,) = query(pg_dsn, "SELECT sum(octet_length(body)) FROM raw.login_events")[0]
    assert octets == sum(len(b.encode()) for b in expected)
    assert sqs_queue.depth() == (0, 0)


def test_max_messages_stops_after_n(pg_dsn, sqs_queue, env_for):
    assert sample.send_events(sqs_queue.settings, sample.synthetic_events(30)) == 30
    code, _, stderr = run_ingest(*RUN, "--max-messages", "10", env=env_for(pg_dsn))
    assert code == 0, stderr
    assert_summary(stderr, 10, 10, 10)
    assert len(raw_rows(pg_dsn)) == 10
    assert sqs_queue.depth() == (20, 0)


def test_small_batches_all_land(pg_dsn, sqs_queue, env_for):
    assert sample.send_events(sqs_queue.settings, sample.synthetic_events(25)) == 25
    code, _, stderr = run_ingest(*RUN, "--batch-size", "7", env=env_for(pg_dsn))
    assert code == 0, stderr
    assert_summary(stderr, 25, 25, 25)
    loads = query(pg_dsn, "SELECT count(DISTINCT _dlt_load_id) FROM raw.login_events")[0][0]
    assert loads >= 4  # ceil(25 / 7) micro-batches, each its own load
    assert len({r[0] for r in raw_rows(pg_dsn)}) == 25
    assert sqs_queue.depth() == (0, 0)


@pytest.mark.slow
def test_crash_after_commit_means_redelivery_not_loss(pg_dsn, sqs_queue, env_for):
    assert sample.send_events(sqs_queue.settings, sample.synthetic_events(5)) == 5
    batch = sqs_queue.sqs.receive(max_messages=10, wait_seconds=1, visibility_timeout=1)
    assert batch
    first_ids = {m.message_id for m in batch}
    # Load and commit, then "crash": the messages are never deleted.
    loader = RawLoader(role_dsn(pg_dsn, config.LOADER_ROLE), retry_budget_seconds=5)
    try:
        loader.load(batch, sqs_queue.name)
    finally:
        loader.close()
    assert len(raw_rows(pg_dsn)) == len(batch)

    # Past the visibility timeout of 1 s, the undeleted messages are visible again.
    assert sqs_queue.wait_until_visible(5) == (5, 0)
    code, _, stderr = run_ingest(*RUN, env=env_for(pg_dsn))
    assert code == 0, stderr
    assert_summary(stderr, 5, 5, 5)
    assert f"redeliveries {len(batch)}," in stderr

    rows = raw_rows(pg_dsn)
    assert len(rows) == 5 + len(batch)
    for message_id in first_ids:
        counts = sorted(r[2] for r in rows if r[0] == message_id)
        assert counts == [1, 2], message_id
        assert len({r[1] for r in rows if r[0] == message_id}) == 1  # the same body both times
    assert len({r[0] for r in rows}) == 5
    assert sqs_queue.depth() == (0, 0)


def test_bootstrapped_database_has_the_raw_contract(pg_dsn):
    """The raw table dbt reads, as ARCHITECTURE.md's raw contract describes it, and who may touch it."""
    columns = query(
        pg_dsn,
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = 'raw' AND table_name = 'login_events' ORDER BY ordinal_position",
    )
    assert columns[:6] == [
        ("message_id", "text", "NO"),
        ("body", "text", "NO"),
        ("sent_at", "timestamp with time zone", "NO"),
        ("received_at", "timestamp with time zone", "NO"),
        ("receive_count", "integer", "NO"),
        ("queue", "text", "NO"),
    ]
    assert {c[0] for c in columns[6:]} == {"_dlt_load_id", "_dlt_id"}
    indexed = query(
        pg_dsn,
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'raw' AND tablename = 'login_events'"
        " AND indexdef LIKE '%(message_id)%'",
    )
    assert indexed == [(1,)]
    privileges = query(
        pg_dsn,
        "SELECT has_table_privilege(%s, 'raw.login_events', 'INSERT'),"
        " has_schema_privilege(%s, 'raw', 'USAGE'),"
        " has_database_privilege('public', current_database(), 'CONNECT')",
        (config.LOADER_ROLE, config.ANALYST_ROLE),
    )
    assert privileges == [(True, False, False)]


def test_a_loader_keeps_no_package_of_its_completed_loads(pg_dsn):
    """dlt keeps each completed load's package (~100 KiB) in its working dir; a consumer loading
    every second would fill its disk. After 20 loads the working dir is as small as after one,
    and dlt's log of configuration lookups (cleared at the end of each run's trace) no longer."""
    from datetime import datetime
    from pathlib import Path

    from dlt.common.configuration.utils import get_resolved_traces

    from ingest.consumer.sqs import Message

    def size(path: str) -> int:
        return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())

    def batch(seed: int) -> list[Message]:
        now = datetime.now(UTC)
        events = sample.synthetic_events(50, seed=seed)
        return [Message(f"keep-{seed}-{i}", sample.to_body(e), now, now, 1, "") for i, e in enumerate(events)]

    loader = RawLoader(role_dsn(pg_dsn, config.LOADER_ROLE))
    try:
        loader.load(batch(0), "q")
        after_one = size(loader._workdir), len(get_resolved_traces().all_traces)
        for seed in range(1, 20):
            loader.load(batch(seed), "q")
        assert size(loader._workdir) <= after_one[0] + 16 * 1024, (after_one, size(loader._workdir))
        assert len(get_resolved_traces().all_traces) <= after_one[1], after_one
        assert not list(Path(loader._workdir).rglob("loaded/*/*"))
    finally:
        loader.close()
    assert query(pg_dsn, "SELECT count(*) FROM raw.login_events WHERE message_id LIKE 'keep-%'") == [(1000,)]
