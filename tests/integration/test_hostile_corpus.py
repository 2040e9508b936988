"""Integration: malformed and hostile bodies never break a load or a dbt run (tests/data/hostile_corpus.json).

Every body of the corpus goes through the real queue as-is (`seed --file`, string elements), `run`
and `transform build --warn-error`, once for the module; then each entry must end as it says:
a user_logins row with the expected values, or a rejected_login_events row with the exact reason.
"""

from __future__ import annotations

import json

import pytest

from conftest import Job, drop_test_database, new_job, query, send_events
from ingest import config
from ingest.vault import masking

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CORPUS_FILE = config.REPO_ROOT / "tests" / "data" / "hostile_corpus.json"
CORPUS: list[dict] = json.loads(CORPUS_FILE.read_text(encoding="utf-8"))
BY_NAME = {entry["name"]: entry for entry in CORPUS}
SQS_MAX_BYTES = 256 * 1024
PII_KINDS = {"ip": "masked_ip", "device_id": "masked_device_id"}
MART_VALUES = ("user_id", "device_type", "locale", "app_version", "app_version_text")


def rejection_reasons() -> list[str]:
    """The fixed reason list of dbt_project.yml (vars.rejection_reasons), without a YAML parser."""
    text = (config.DBT_PROJECT_DIR / "dbt_project.yml").read_text()
    block = text.split("rejection_reasons:", 1)[1]
    reasons = []
    for line in block.splitlines()[1:]:
        if not line.strip().startswith("- "):
            break
        reasons.append(line.strip()[2:])
    return reasons


def payload(entry: dict) -> object:
    """The body as Python reads it (last duplicate key wins, as in jsonb); None when it does not parse."""
    try:
        return json.loads(entry["body"])
    except (ValueError, RecursionError):
        return None


def cleartext_pii() -> set[str]:
    """Every ip/device_id string of the corpus, as sent and canonical (blank ones hold nothing)."""
    values = set()
    for entry in CORPUS:
        event = payload(entry)
        if not isinstance(event, dict):
            continue
        for kind in PII_KINDS:
            value = event.get(kind)
            if isinstance(value, str) and value.strip():
                values.add(value)
                if canonical := masking.canonical(value, kind):
                    values.add(canonical)
    return values


@pytest.fixture(scope="module")
def hostile_job(pg_cluster, template_db, moto_server):
    job = new_job(pg_cluster, template_db, moto_server, "hostile")
    send_events(job, [entry["body"] for entry in CORPUS])  # strings are sent as-is: each body byte for byte
    job.run("run", "--wait-time", "1")
    job.transform()  # build --warn-error, exit 0: no body breaks the run
    yield job
    drop_test_database(pg_cluster, job.dsn)


@pytest.fixture(scope="module")
def outcomes(hostile_job: Job) -> dict[str, tuple[str, dict]]:
    """entry name → ("mart", row) or ("rejected", row), found through its body in raw."""
    dsn = hostile_job.dsn
    raw = query(dsn, "SELECT DISTINCT body, message_id, (sent_at AT TIME ZONE 'UTC')::date FROM raw.login_events")
    by_body = {body: (message_id, day) for body, message_id, day in raw}
    columns = ["message_id", "user_id", "device_type", "masked_ip", "masked_device_id", "locale", "app_version"]
    columns += ["create_date", "app_version_text"]
    mart = {
        r[0]: dict(zip(columns, r, strict=True)) for r in query(dsn, f"SELECT {', '.join(columns)} FROM user_logins")
    }
    rejected = {
        r[0]: {"reason": r[1], "sent_at": r[2]}
        for r in query(dsn, "SELECT message_id, reason, sent_at FROM rejected_login_events")
    }
    found = {}
    for entry in CORPUS:
        if entry["body"] not in by_body:  # not landed verbatim: see the raw test
            continue
        message_id, day = by_body[entry["body"]]
        if message_id in mart:
            found[entry["name"]] = ("mart", {**mart[message_id], "sent_day": day})
        elif message_id in rejected:
            found[entry["name"]] = ("rejected", rejected[message_id])
    return found


def test_corpus_is_well_formed():
    reasons = rejection_reasons()
    assert len(CORPUS) >= 50 and len(BY_NAME) == len(CORPUS)
    assert len({entry["body"] for entry in CORPUS}) == len(CORPUS), "bodies identify entries: no two alike"
    for entry in CORPUS:
        assert 0 < len(entry["body"].encode("utf-8")) < SQS_MAX_BYTES, entry["name"]
        assert entry["expect"] == "mart" or entry["expect"] in reasons, entry["name"]
        assert ("mart" in entry) == (entry["expect"] == "mart"), entry["name"]
        for target in entry.get("same_token_as", {}).values():
            assert BY_NAME[target]["expect"] == "mart", entry["name"]
    # erased_subject depends on an erasure, received_at_out_of_range on raw's received_at, not on
    # a body: test_lifecycle.py and test_hostile_rows.py exercise them.
    assert set(reasons) - {"erased_subject", "received_at_out_of_range"} <= {entry["expect"] for entry in CORPUS}, (
        "every reason is exercised"
    )


def test_every_body_lands_verbatim_and_is_accounted_for_once(hostile_job):
    dsn = hostile_job.dsn
    raw = query(dsn, "SELECT DISTINCT message_id, body FROM raw.login_events")
    assert len({message_id for message_id, _ in raw}) == len(CORPUS)
    assert sorted(body for _, body in raw) == sorted(entry["body"] for entry in CORPUS)  # byte-identical
    (accounted,) = query(
        dsn, "SELECT (SELECT count(*) FROM user_logins) + (SELECT count(*) FROM rejected_login_events)"
    )[0]
    assert accounted == len(CORPUS)


@pytest.mark.parametrize("entry", CORPUS, ids=[entry["name"] for entry in CORPUS])
def test_entry_outcome(hostile_job, outcomes, entry):
    assert entry["name"] in outcomes, "not in raw verbatim, or neither in user_logins nor rejected_login_events"
    where, row = outcomes[entry["name"]]
    if entry["expect"] != "mart":
        assert where == "rejected", f"in user_logins, expected a rejection as {entry['expect']}"
        assert row["reason"] == entry["expect"]
        return
    assert where == "mart", f"rejected as {row['reason']}"
    expected = entry["mart"]
    assert {k: row[k] for k in MART_VALUES} == {k: expected[k] for k in MART_VALUES}
    assert row["create_date"] == row["sent_day"]
    event = payload(entry)
    for kind, column in PII_KINDS.items():
        if expected[column] is None:
            assert row[column] is None, column
        else:
            assert expected[column] == "token"
            assert row[column] == masking.token(event[kind], kind, hostile_job.hmac_key), column
    for column, other in entry.get("same_token_as", {}).items():
        assert row[column] == outcomes[other][1][column], f"{column} differs from {other}'s"


def test_no_cleartext_pii_in_the_marts_or_the_output(hostile_job):
    cleartext = cleartext_pii()
    assert len(cleartext) > 30
    for table in ("user_logins", "rejected_login_events"):
        for row in query(hostile_job.dsn, f"SELECT to_jsonb(t) FROM {table} AS t"):
            leaked = {str(value) for value in row[0].values()} & cleartext
            assert not leaked, f"{len(leaked)} cleartext ip/device ids in {table}"
    for i, result in enumerate(hostile_job.outputs):
        text = result.stdout + result.stderr
        leaked = [value for value in cleartext if value in text]
        assert not leaked, f"{len(leaked)} cleartext ip/device ids in the output of command {i}"
