"""Integration: a new user's path, as written in the README, on a local stack of the test's own.

`eval "$(make -s env)"`, then `make ingest && dbt run` verbatim in a fresh shell, and dbt from
anywhere in the checkout; the stack lives in a tmp dir on free ports (LOGINVAULT_LOCAL_DIR,
LOGINVAULT_PG_PORT, LOGINVAULT_SQS_PORT), never in the checkout's .local/.
"""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess

import pytest
from test_stack_cli import eval_env, local_stack_env  # noqa: F401 (a fixture)

from conftest import REPO_ROOT, query, run_ingest
from ingest import config
from ingest.local.keys_file import KeysFile
from ingest.local.network import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HMAC, ENCRYPTION = config.HMAC_KEY_ENV, config.ENCRYPTION_KEY_ENV
HMAC_PREVIOUS, ENCRYPTION_PREVIOUS = f"{HMAC}_PREVIOUS", f"{ENCRYPTION}_PREVIOUS"
FETCH = 'import sys, urllib.request as r; open(sys.argv[2], "wb").write(r.urlopen(sys.argv[1]).read())'
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def fresh_shell(script: str, env: dict[str, str], tmp_path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`bash -c script` from the checkout's root as a new user's shell: no venv on PATH, a HOME
    without ~/.dbt; dbt's target/ and logs/ under tmp_path (tests run beside each other)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    shell_env = {
        **env,
        "PATH": SYSTEM_PATH,
        "HOME": str(home),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
        "DBT_LOG_PATH": str(tmp_path / "logs"),
    }
    for name in ("VIRTUAL_ENV", "DBT_PROJECT_DIR", "DBT_PROFILES_DIR", "MAKEFLAGS", "MAKELEVEL"):
        shell_env.pop(name, None)
    return subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        cwd=REPO_ROOT,
        env=shell_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_make_ingest_and_dbt_run_verbatim_then_dbt_from_anywhere(local_stack_env, tmp_path):  # noqa: F811
    env, _, _, _ = local_stack_env
    port = free_port()
    script = "\n".join(
        [
            "set -e",
            'eval "$(make -s env)"',
            "make ingest && dbt run",
            # Anywhere in the checkout, and with no key in the shell: `dbt` brings its own.
            "cd ingest/cli",
            "env -u PGOPTIONS -u LOGINVAULT_HMAC_KEY -u LOGINVAULT_ENCRYPTION_KEY dbt test",
            "dbt docs generate",
            # dbt docs serve, until it has served the catalog once (fetched by the venv's python).
            f"dbt docs serve --port {port} --no-browser & server=$!",
            f"fetch() {{ python -c '{FETCH}' http://127.0.0.1:{port}/catalog.json {tmp_path}/served-catalog.json; }}",
            "for _ in $(seq 300); do fetch 2>/dev/null && break; sleep 0.2; done",
            "fetch; status=$?; kill $server; exit $status",
        ]
    )
    out = fresh_shell(script, env, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ingest: received 100, landed 100" in out.stderr
    assert "Completed successfully" in out.stdout
    assert (tmp_path / "target" / "catalog.json").is_file(), "dbt docs generate wrote the catalog"
    assert (tmp_path / "served-catalog.json").read_bytes() == (tmp_path / "target" / "catalog.json").read_bytes()
    admin = eval_env(env)["PG_DSN"]
    ((logins,),) = query(admin, "SELECT count(*) FROM public.user_logins")
    ((rejected,),) = query(admin, "SELECT count(*) FROM public.rejected_login_events")
    assert logins + rejected == 100 and logins > 0
    ((passes,),) = query(admin, f"SELECT count(*) FROM {config.RAW_SCHEMA}.login_events")
    assert passes == 100


def test_dbt_without_the_shell_setup_names_it(local_stack_env, tmp_path):  # noqa: F811
    """Before the setup line, `dbt` is not the project's: the README's line is what makes it so."""
    env, _, _, _ = local_stack_env
    out = fresh_shell("command -v dbt || echo no-dbt", env, tmp_path, timeout=60)
    assert out.stdout.strip() == "no-dbt"
    out = fresh_shell('eval "$(make -s env)" && command -v dbt', env, tmp_path, timeout=120)
    assert out.stdout.strip() == str(REPO_ROOT / "bin" / "dbt"), out.stderr
    # direnv's .envrc is the same line.
    out = fresh_shell("source .envrc && command -v dbt && echo $DBT_PROFILES_DIR", env, tmp_path, timeout=120)
    assert out.stdout.split() == [str(REPO_ROOT / "bin" / "dbt"), str(REPO_ROOT / "dbt_project")], out.stderr


# ---------------------------------------------------------------- output people use


def test_keys_status_on_a_fresh_database_says_when_a_key_is_registered(job):
    out = job.run("keys", "status")
    assert out.stdout.splitlines()[0].startswith("kind\tversion\tstate")
    assert len(out.stdout.splitlines()) == 1
    assert "no key is registered yet" in out.stderr and "first build" in out.stderr


def test_summary_prints_whole_tokens_that_recover_takes(job):
    job.run("seed", "--count", "20")
    job.run("run", "--wait-time", "1")
    job.transform()
    out = job.run("summary")
    assert re.search(r"^user_logins: \d+ rows \(as loginvault_analyst\)$", out.stdout, re.M)
    tokens = re.findall(r"\b[0-9a-f]{64}\b", out.stdout)
    assert tokens, out.stdout
    assert "…" not in out.stdout
    recovered = job.run("recover", "lookup", "--token", tokens[0], "--reason", "test: a token as summary prints it")
    assert recovered.stdout.strip(), recovered.stderr


# ---------------------------------------------------------------- local keys in step


def stack_env(env: dict[str, str]) -> dict[str, str]:
    """What `eval "$(loginvault stack env)"` exports, as a dict."""
    out = run_ingest("stack", "env", env=env)
    assert out.returncode == 0, out.stderr
    return dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.stdout.splitlines())


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def built_stack(local_stack_env, tmp_path):  # noqa: F811
    """A local stack of the test's own, 20 events ingested and built: (env, its keys file, the env
    of a shell after `eval "$(make -s env)"`)."""
    env, local_dir, _, _ = local_stack_env
    env = {**env, "DBT_TARGET_PATH": str(tmp_path / "target"), "DBT_LOG_PATH": str(tmp_path / "logs")}
    ok(run_ingest("stack", "up", "--seed-if-new", "20", env=env))
    shell = {**env, **stack_env(env)}
    ok(run_ingest("run", "--wait-time", "1", env=shell))
    ok(run_ingest("transform", "build", env=shell, timeout=300))
    return env, KeysFile(local_dir / "keys.env"), shell


def test_keys_rotated_by_hand_keep_the_local_keys_file_in_step(built_stack):
    env, keys_file, shell = built_stack

    # By hand, as the README says: the new key, the active one as …_PREVIOUS.
    old, new = keys_file.read(create=False)[HMAC], secrets.token_hex(32)
    out = ok(run_ingest("keys", "rotate", "hmac", env={**shell, HMAC: new, HMAC_PREVIOUS: old}, timeout=300))
    assert "now holds the new hmac key" in out.stderr and 'eval "$(make -s env)"' in out.stderr
    assert (keys_file.read(create=False)[HMAC], keys_file.read(create=False)[HMAC_PREVIOUS]) == (new, old)
    # A new shell (and `make transform`) builds with it (the keys file's); a shell that exported the old
    # key by hand is told why and how.
    ok(run_ingest("transform", "build", env={**env, **stack_env(env)}, timeout=300))
    stale = run_ingest("transform", "build", env={**shell, HMAC: old}, timeout=300)
    assert stale.returncode == 1
    (line,) = stale.error_lines()
    assert "hmac key version 1 (previous), not the active version 2" in line
    assert "this environment has the key from before a rotation" in line and 'eval "$(make -s env)"' in line

    out = ok(run_ingest("keys", "retire", "hmac", env={**env, **stack_env(env)}))
    assert HMAC_PREVIOUS not in keys_file.read(create=False)
    assert f"{HMAC_PREVIOUS} removed from" in out.stderr

    # make rotate-keys after all that: whole, both kinds.
    before = keys_file.read(create=False)
    out = ok(run_ingest("stack", "rotate-keys", env=env, timeout=300))
    after = keys_file.read(create=False)
    assert after[HMAC] != before[HMAC] and after[HMAC_PREVIOUS] == before[HMAC]
    assert after[ENCRYPTION] != before[ENCRYPTION] and after[ENCRYPTION_PREVIOUS] == before[ENCRYPTION]
    ok(run_ingest("transform", "build", env={**env, **stack_env(env)}, timeout=300))


def test_make_rotate_keys_checks_everything_before_it_changes_anything(built_stack):
    env, keys_file, _ = built_stack
    ok(run_ingest("stack", "rotate-keys", env=env, timeout=300))  # version 2 of each; version 1 previous
    # The HMAC key in the file is not the registered one (changed by other means).
    values = keys_file.read(create=False)
    values[HMAC] = secrets.token_hex(32)
    keys_file.write(values)
    text = keys_file.path.read_text()
    status = ok(run_ingest("keys", "status", env={**env, **stack_env(env)})).stdout

    refused = run_ingest("stack", "rotate-keys", env=env, timeout=300)
    assert refused.returncode == 1
    (line,) = refused.error_lines()
    assert f"{HMAC} in {keys_file.path}" in line and "nothing was changed" in line
    # Nothing changed: the file, and the registry (the encryption version 1 was not retired).
    assert keys_file.path.read_text() == text
    assert ok(run_ingest("keys", "status", env={**env, **stack_env(env)})).stdout == status


def test_source_freshness_runs_without_the_pii_keys_and_a_build_names_the_missing_one(job):
    """The freshness CronJob mounts no key: `transform source freshness` needs none."""
    job.run("seed", "--count", "5")
    job.run("run", "--wait-time", "1")
    keyless = {name: value for name, value in job.env.items() if name not in config.KEY_ENVS}
    fresh = job.run("transform", "source", "freshness", env=keyless)
    assert "PASS" in fresh.stdout
    build = job.run("transform", "build", env=keyless, ok=False)
    assert build.returncode == 1
    (line,) = build.error_lines()
    assert line.startswith(f"error: {config.HMAC_KEY_ENV} is not set")


def test_a_dbt_command_line_dbt_refuses_exits_2_in_one_line(job):
    out = job.run("transform", "bogus", ok=False)
    assert out.returncode == 2, out.stderr
    (line,) = out.error_lines()
    assert line.startswith("error: dbt bogus:")
