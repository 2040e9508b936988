"""dbt in this process, as loginvault_transformer with the keys in the session: one command
(`ingest transform`), or a build every S seconds (`ingest transform --every S`, the transform
service of docker compose and Kubernetes).

The service imports dbt and parses the project once, then runs each build with that manifest
(dbt's programmatic API): a cycle costs the build, not ~2.5 s of interpreter start, imports and
manifest loading. The project cannot change under a running service, so the unit tests (which
check the SQL, not the data) run in its first build only; the data tests run in every build.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ingest import LoginvaultError, config, db, dbt_results

log = logging.getLogger(__name__)

# dbt flags that change what parsing produces: a service's parse must use the same as its builds.
_PARSE_FLAGS = ("--vars", "--target", "-t", "--profile", "--profiles-dir", "--project-dir", "--target-path")
DEFAULT_ARGS = ("build",)
# Read by the dbt project's loginvault_test_scope macro: all (the default) or incremental.
TEST_SCOPE_ENV = "LOGINVAULT_TEST_SCOPE"


def dbt_env() -> dict[str, str]:
    """The environment dbt runs in: the transformer's connection, the keys, no telemetry.

    Without any key set, no key setting: a command that uses none (`source freshness`, `docs
    generate`) runs so; a writing one is refused by the pre-flight check, naming the missing key."""
    from ingest import keys

    env = {
        **db.libpq_env(db.role_dsn(config.TRANSFORMER_ROLE)),
        "DBT_PROFILES_DIR": str(config.DBT_PROJECT_DIR),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    if any(keys.key_value(name) for name in config.KEY_ENVS):  # the environment's, or LOGINVAULT_KEYS_FILE's
        env["PGOPTIONS"] = keys.key_options()
    return env


def dbt_environment(test_scope: str = "all") -> None:
    """dbt reads its connection, keys and project from the environment (profiles.yml), and the
    data tests' scope (macros/test_scope.sql) from LOGINVAULT_TEST_SCOPE."""
    os.environ.update(dbt_env())
    os.environ[TEST_SCOPE_ENV] = test_scope
    os.environ.setdefault("DBT_PROJECT_DIR", str(config.DBT_PROJECT_DIR))
    if not sys.stdout.isatty():
        # A log file or a pipe gets plain text; the user's own DBT_USE_COLORS still wins.
        os.environ.setdefault("DBT_USE_COLORS", "false")


def _parse_args(args: Sequence[str]) -> list[str]:
    """`parse` with the manifest-shaping flags of `args` (`--vars X`, `--target=X`, …), and
    quiet when they are."""
    out = ["parse"]
    rest = list(args[1:])
    for i, arg in enumerate(rest):
        name = arg.split("=", 1)[0]
        if name in ("--quiet", "-q"):
            out.append(arg)
        elif name in _PARSE_FLAGS:
            out.append(arg)
            if "=" not in arg and i + 1 < len(rest):
                out.append(rest[i + 1])
    return out


def without_unit_tests(args: Sequence[str]) -> list[str]:
    """`build …`/`test …` minus the unit tests, unless the user chose resource types themselves."""
    if args[0] not in ("build", "test") or any(
        a.split("=", 1)[0].rstrip("s") in ("--resource-type", "--exclude-resource-type") for a in args
    ):
        return list(args)
    return [*args, "--exclude-resource-type", "unit_test"]


@dataclass(frozen=True)
class Build:
    """One build of the service, as its observer (the metrics) sees it."""

    ok: bool
    seconds: float
    finished_at: float  # Unix time
    rows_added: dict[str, int] = field(default_factory=dict)  # model name → rows inserted


class UsageError(LoginvaultError):
    """dbt refused the command line: no later cycle can do better. A bad value: exit 2."""

    exit_code = 2


class Transformer:
    """Runs dbt commands in this process. `warm()` parses once; later commands reuse it."""

    def __init__(self, test_scope: str = "all") -> None:
        dbt_environment(test_scope)
        try:
            from dbt.cli.main import dbtRunner
        except ImportError:
            raise LoginvaultError("dbt is not installed: run `make venv`") from None
        self._runner = dbtRunner()
        self.rows_added: dict[str, int] = {}  # of the last command: dbt_results.rows_affected()
        self.failure: str | None = None  # of the last command: dbt_results.first_failure()

    def invoke(self, args: Sequence[str]) -> int:
        """One dbt command: 0, or 1 when a model or test failed (dbt printed which; `failure` names
        the first). When dbt itself fails (bad command line, project, profile, no database),
        LoginvaultError with its reason."""
        result = self._runner.invoke(list(args))
        self.rows_added = dbt_results.rows_affected(result.result)
        self.failure = dbt_results.first_failure(result.result)
        if result.success:
            return 0
        if result.exception is not None:
            from dbt.cli.exceptions import DbtUsageException

            error = UsageError if isinstance(result.exception, DbtUsageException) else LoginvaultError
            raise error(f"dbt {shlex.join(args)}: {dbt_results.reason(str(result.exception))}")
        return 1

    def warm(self, args: Sequence[str]) -> None:
        """Parse the project once; the commands after it use that manifest."""
        result = self._runner.invoke(_parse_args(args))
        if not result.success:
            reason = db.first_line(result.exception) if result.exception else "see dbt's output above"
            raise LoginvaultError(f"dbt could not parse the project: {reason}")
        self._runner = type(self._runner)(manifest=result.result)


# dbt commands that write (models, the tests' mark): they take the transform lock and need the
# registered keys; `docs generate`, `parse`, `ls`, … do neither.
WRITING = frozenset({"build", "run", "test", "seed", "snapshot"})


def preflight(args: Sequence[str]) -> None:
    """Before dbt starts: dbt's own login (a member of the transformer role, no superuser)
    connects, and the raw tables it reads are what the bootstrap made them (owner, kind, no
    row-level security, policies, triggers or rules: loginvault.assert_transform_inputs).
    Checked in a session without the keys; the staging model checks again, locked, in the
    transaction that reads raw. A writing command's keys are the registered active ones."""
    import psycopg

    from ingest import keys

    with db.connect(config.TRANSFORMER_ROLE, autocommit=True) as conn:
        try:
            conn.execute("SELECT loginvault.assert_transform_inputs()")
            if args and args[0] in WRITING:
                keys.check_environment(conn)
                _refuse_partial_rebuild(conn, args)
        except psycopg.errors.UndefinedFunction:
            raise LoginvaultError("the database is not bootstrapped for this version: run the bootstrap") from None
        except psycopg.Error as exc:
            raise LoginvaultError(db.first_line(exc)) from None


def _refuse_partial_rebuild(conn, args: Sequence[str]) -> None:
    """After retention has removed cleartext, a --full-refresh would rebuild the marts and the
    vault from partial history and lose rows: refused before dbt starts (the models' pre-hook
    refuses too, for a plain `dbt build --full-refresh`), unless deliberately overridden."""
    if "--full-refresh" not in args or "loginvault_rebuild_from_partial_raw" in " ".join(args):
        return
    (cutoff,) = conn.execute("SELECT max(cutoff) FROM raw.retention_log").fetchone()
    if cutoff is not None:
        raise LoginvaultError(
            f"retention removed the cleartext received before {cutoff:%Y-%m-%dT%H:%M:%SZ}: a --full-refresh would"
            " rebuild the marts and the vault from partial history and lose rows; to rebuild anyway, add"
            " --vars '{loginvault_rebuild_from_partial_raw: true}'"
        )


@contextlib.contextmanager
def guarded(args: Sequence[str]) -> Iterator[None]:
    """A writing command holds the transform lock while dbt runs: no key rotation (and no
    second transform) meanwhile; one that cannot have it refuses with one sentence. Under the
    lock (no rotation's tables half-swapped), before dbt starts, the database's privileges must
    be those of ingest/schema/sql/acl.toml (`loginvault check`)."""
    from ingest import keys

    if args and args[0] in WRITING:
        with keys.exclusive("transform"):
            check_privileges()
            yield
    else:
        yield


def check_privileges() -> None:
    """LoginvaultError naming the first difference from ingest/schema/sql/acl.toml, if any."""
    import psycopg

    from ingest import settings
    from ingest.schema import acl
    from ingest.settings import CommonSettings

    mart_schema = settings.load(CommonSettings, require=False).mart_schema
    with db.connect(config.TRANSFORMER_ROLE, autocommit=True) as conn:
        try:
            acl.refuse(acl.check(conn, mart_schema))
        except psycopg.Error as exc:
            raise LoginvaultError(db.first_line(exc)) from None


def run_once(args: Sequence[str], test_scope: str = "all") -> int:
    """One dbt command; a failed one is a LoginvaultError naming what failed first."""
    args = list(args or DEFAULT_ARGS)
    preflight(args)
    with guarded(args):
        transformer = Transformer(test_scope)
        if transformer.invoke(args) != 0:
            raise LoginvaultError(f"dbt {args[0]} failed: {transformer.failure or 'see its output above'}")
    return 0


def run_every(
    seconds: float,
    args: Sequence[str],
    stop: threading.Event,
    cycles: int | None = None,
    observer: Callable[[Build], None] | None = None,
    test_scope: str = "incremental",
) -> int:
    """Build every `seconds` (measured start to start; a build that overruns is followed at
    once) until `stop` is set, or `cycles` builds. A failed build is logged and retried next
    cycle: the service keeps going. `observer` hears of each build. Returns 0, or 1 when the
    last build failed. The data tests check the rows of `test_scope` (incremental: those staged
    since the last build whose every data test passed)."""
    args = list(args or DEFAULT_ARGS)
    preflight(args)
    transformer = Transformer(test_scope)
    transformer.warm(args)
    code, done = 0, 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            if done:
                preflight(args)  # the keys may have been rotated since: say so, in one line
            with guarded(args):
                code = transformer.invoke(args if done == 0 else without_unit_tests(args))
        except UsageError:
            raise
        except LoginvaultError as exc:  # e.g. the database is unreachable: next cycle, again
            log.error("transform: %s", exc)
            code = 2
        done += 1
        took = time.monotonic() - started
        if code == 0:
            log.info("transform: dbt %s ok in %.1f s (cycle %d)", args[0], took, done)
        else:
            why = f": {transformer.failure}" if code == 1 and transformer.failure else ""
            log.error(
                "transform: dbt %s failed (exit %d) in %.1f s (cycle %d)%s; next in %.0f s",
                args[0],
                code,
                took,
                done,
                why,
                seconds,
            )
        if observer is not None:
            observer(Build(code == 0, took, time.time(), transformer.rows_added if code == 0 else {}))
        if cycles is not None and done >= cycles:
            break
        stop.wait(max(0.0, seconds - (time.monotonic() - started)))
    return 0 if code == 0 else 1
