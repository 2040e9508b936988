"""Static checks of the deployment files: Dockerfile, docker-compose.yml, deploy/k8s, deploy/terraform,
the GitHub workflow and the runbook.

Nothing here starts a server: the files are parsed and checked against each other and against the
code (the env var names it reads, the CLI it parses, the SQS calls the ingest makes). Where a real
validator is there it runs too: terraform fmt, kubectl's kustomize, and the schemas of
kubernetes-validate and check-jsonschema; without one, only the test that needs it is skipped,
saying why. terraform validate (init with the provider's plugin) is an integration test:
tests/integration/test_terraform_validate.py.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path

import hcl2
import kustomize
import pytest
import recovery_interface as recovery
import yaml

from ingest import cli, config, settings
from ingest.consumer import sqs
from ingest.local import stack
from ingest.local.keys_file import LOCAL_SECRETS
from ingest.local.pg_cluster import ADMIN_USER
from ingest.vault import keys

ROOT = config.REPO_ROOT
K8S = ROOT / "deploy" / "k8s"
TERRAFORM = ROOT / "deploy" / "terraform"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"

APP_SERVICES = ("bootstrap", "ingest", "transform", "retention", "recovery", "seed", "cli")
SECRET_NAME = re.compile(r"(_DSN|_KEY|PASSWORD)$")
# Variables read by the AWS SDK and libpq rather than by loginvault's own code.
AWS_SDK_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
LIBPQ_ENV = {"PGSSLMODE", "PGSSLROOTCERT"}
# The ingest's SQS client calls → the IAM action that authorizes each (the batch APIs are
# authorized by the single-message action).
SQS_IAM_ACTIONS = {
    "receive_message": "sqs:ReceiveMessage",
    "delete_message": "sqs:DeleteMessage",
    "delete_message_batch": "sqs:DeleteMessage",
    "change_message_visibility": "sqs:ChangeMessageVisibility",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
    "get_queue_attributes": "sqs:GetQueueAttributes",
    "get_queue_url": "sqs:GetQueueUrl",
    "send_message": "sqs:SendMessage",
    "send_message_batch": "sqs:SendMessage",
}
INGEST_SQS_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
}
# Key custody: the PII keys (and, during a rotation, the keys before it) are held by these workloads
# only, in Kubernetes and in docker-compose.yml.
KEY_NAMES = {*config.KEY_ENVS, *keys.PREVIOUS_ENV.values()}
KEY_WORKLOADS = {"loginvault-transform", "loginvault-recovery"}
KEY_SERVICES = {"transform", "recovery"}
# Workloads that mount the keys without using them: none (the custody test fails on any).
KEYS_MOUNTED_BUT_UNUSED: set[str] = set()
# The Secret of the keys before a rotation: created by hand for the rotation (docs/operations.md,
# "Rotate keys"), optional where referenced, never synced by the External Secrets Operator.
ROTATION_SECRET = "loginvault-keys-previous"


# ---------------------------------------------------------------- helpers


def load_yaml(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@cache
def code_env_names() -> frozenset[str]:
    """Every environment variable loginvault's code or dbt profile reads."""
    names: set[str] = set(config.KEY_ENVS) | set(settings.variables())
    patterns = (
        r"\b(?:env|env_int|require|check_key)\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']",
        r"os\.environ(?:\.get|\.setdefault)?\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']",
        r"os\.environ\[\s*[\"']([A-Z][A-Z0-9_]+)[\"']\s*\]",
    )
    for path in (ROOT / "ingest").rglob("*.py"):
        text = path.read_text()
        for pattern in patterns:
            names.update(re.findall(pattern, text))
    for path in (ROOT / "dbt_project" / "profiles.yml", ROOT / "dbt_project" / "dbt_project.yml"):
        names.update(re.findall(r"env_var\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']", path.read_text()))
    # db.role_dsn: LOGINVAULT_<ROLE>_DSN
    names.update(w.dsn_env for w in config.WORKLOADS.values())
    # keys.session_options: the keys before a rotation, LOGINVAULT_<KIND>_KEY_PREVIOUS
    names.update(keys.PREVIOUS_ENV.values())
    return frozenset(names)


def local_secrets() -> set[str]:
    """The local stack's secrets (.local/keys.env): docker-compose.yml's .env has the same names."""
    return set(LOCAL_SECRETS)


def local_stack_env_names() -> set[str]:
    """The names `make -s env` exports for the local stack: the keys of LocalStack.local_values()."""
    tree = ast.parse(Path(stack.__file__).read_text())
    func = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "local_values")
    returned = next(n.value for n in ast.walk(func) if isinstance(n, ast.Return))
    assert isinstance(returned, ast.Dict)
    names = {key.value for key in returned.keys if isinstance(key, ast.Constant)}
    if any(key is None for key in returned.keys):  # **{…} of the workloads' DSNs and of the keys
        names.update(config.KEY_ENVS)
        names.update(w.dsn_env for w in config.WORKLOADS.values())
    return names


def parse_cli(argv: list[str]) -> None:
    """Fail the test unless `loginvault <argv>` parses with the real CLI parser (flags' values included)."""
    try:
        cli.build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help
            return
        pytest.fail(f"`loginvault {shlex.join(argv)}` is not a valid command line (exit {exc.code})")


def is_recovery_service(argv: list[str]) -> bool:
    """`loginvault [global options] recovery serve …`."""
    n = len(recovery.COMMAND)
    return any(tuple(argv[i : i + n]) == recovery.COMMAND for i in range(len(argv)))


def option(argv: list[str], flag: str) -> str:
    """The value of `flag` in a command line."""
    assert flag in argv, f"{flag} missing in {argv}"
    return argv[argv.index(flag) + 1]


def ingest_invocations(text: str) -> list[list[str]]:
    """The arguments of every `loginvault …` (or `python -m ingest …`, the same entry point) in a shell
    text, up to ;, |, &&, || or a line end: `loginvault` where a shell expects a command (a line's
    start, after ;, |, &, $(, -- or VAR=value), not a name among other words."""
    found = []
    command = r"(?:^|[;&|]|--|\$\()\s*(?:[A-Z_]+=\S*\s+)*(?:\S*/)?loginvault"
    for match in re.finditer(rf"(?:python\S* -m ingest|{command}) ([^\n;|&)`]*)", text, re.M):
        words = match.group(1).split(" #")[0]
        try:
            found.append(shlex.split(words))
        except ValueError:  # the closing quote of an enclosing "$(…)"
            found.append(shlex.split(words.rstrip().rstrip("\"'")))
    return found


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_base_user_entrypoint_and_env():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [args for op, args in instructions if op == "USER"]
    assert users, "the image must not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"the final USER must be a numeric non-root uid, got {users[-1]!r}"
    # No RUN after the last USER: nothing the image does at build time runs as that user by accident,
    # and nothing after it runs as root.
    last_user = max(i for i, (op, _) in enumerate(instructions) if op == "USER")
    assert all(op != "RUN" for op, _ in instructions[last_user:])
    entrypoints = [json.loads(args) for op, args in instructions if op == "ENTRYPOINT"]
    assert entrypoints == [["loginvault"]]
    env = " ".join(args for op, args in instructions if op == "ENV")
    for setting in ("RUNTIME__DLTHUB_TELEMETRY=false", "DBT_SEND_ANONYMOUS_USAGE_STATS=false", "PYTHONUNBUFFERED=1"):
        assert setting in env


def test_dockerfile_dependency_layer_comes_before_the_code():
    instructions = dockerfile_instructions()
    copies = [(i, args.split()) for i, (op, args) in enumerate(instructions) if op == "COPY"]
    first_index, first_sources = copies[0]
    assert first_sources[:-1] == ["requirements/runtime.lock"], "copy only the dependencies' lock first"
    install = [
        i
        for i, (op, args) in enumerate(instructions)
        if op == "RUN" and args.split() == ["pip", "install", "--require-hashes", "-r", "requirements/runtime.lock"]
    ]
    assert install, "dependencies are installed from their lock, hashes checked"
    code_copies = {src: i for i, sources in copies[1:] for src in sources[:-1]}
    for code in ("ingest/", "dbt_project/"):
        assert code in code_copies, f"the image needs {code}"
        assert first_index < install[0] < code_copies[code], f"{code} is copied after the dependency layer"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule, simplified: the last pattern matching the path or a parent wins."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern[1:] if negate else pattern
        regex = re.escape(glob.strip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = re.sub(r"\\\[(.*?)\\\]", r"[\1]", regex)
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_secrets_and_clutter_out_of_the_build_context():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        ".local/keys.env",
        ".env",
        ".venv/bin/python",
        ".git/HEAD",
        "dbt_project/target/manifest.json",
        "dbt_project/logs/dbt.log",
        "ingest/__pycache__/cli.cpython-311.pyc",
        "bench/results/run.json",
        "tests/test_config.py",
        ".pytest_cache/v/cache",
        "deploy/terraform/terraform.tfstate",
    ):
        assert dockerignored(path, patterns), f"{path} must not reach the build context"
    for path in (
        "pyproject.toml",
        "requirements/runtime.lock",
        "README.md",
        "ingest/cli/__init__.py",
        "ingest/schema/migrations/versions/0001_baseline.sql",
        "dbt_project/dbt_project.yml",
        "dbt_project/profiles.yml",
        "dbt_project/models/marts/user_logins.sql",
    ):
        assert not dockerignored(path, patterns), f"the image needs {path}"
    # …and everything the Dockerfile copies is in the context.
    for op, args in dockerfile_instructions():
        if op == "COPY":
            for source in args.split()[:-1]:
                assert (ROOT / source).exists() and not dockerignored(source.rstrip("/"), patterns), source


# ---------------------------------------------------------------- docker-compose.yml


@cache
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def service_env(name: str) -> dict[str, str]:
    return {key: str(value) for key, value in (compose()["services"][name].get("environment") or {}).items()}


def interpolate(value: str) -> str:
    """What compose makes of `${VAR:-default}` when VAR is unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def published_ports(service: dict) -> set[int]:
    return {int(str(port).rsplit(":", 1)[-1]) for port in service.get("ports", [])}


def test_compose_services_images_and_ports():
    services = compose()["services"]
    assert {"postgres", "localstack", *APP_SERVICES} <= set(services)
    assert services["postgres"]["image"] == "postgres:15"
    assert services["localstack"]["image"].startswith("localstack/localstack:")
    assert "latest" not in services["localstack"]["image"], "pin LocalStack: newer images require an auth token"
    assert 5432 in published_ports(services["postgres"])
    assert 4566 in published_ports(services["localstack"])
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, "every loginvault service runs the one image"
    for name in APP_SERVICES:
        assert services[name]["build"] == ".", f"{name} builds the image from the Dockerfile"
    ready = services["localstack"]["volumes"][0].split(":")
    assert ready[1] == "/etc/localstack/init/ready.d"
    assert (ROOT / ready[0]).is_dir() and list((ROOT / ready[0]).glob("*.py"))


def test_compose_env_names_are_the_local_stack_names_and_read_by_the_code():
    names = {name for service in APP_SERVICES for name in service_env(service)}
    missing = local_stack_env_names() - names
    assert not missing, f"the local stack exports {sorted(missing)}, docker-compose.yml does not set them"
    unknown = names - code_env_names() - AWS_SDK_ENV
    assert not unknown, f"docker-compose.yml sets variables no code reads: {sorted(unknown)}"
    ingest, transform = service_env("ingest"), service_env("transform")
    assert not set(config.KEY_ENVS) & set(ingest), "the ingest needs no PII key: it must not get one"
    assert set(config.KEY_ENVS) <= set(transform)
    assert ingest["SQS_QUEUE_URL"].endswith(f"/{config.QUEUE_NAME}")
    assert ingest["SQS_QUEUE_URL"].startswith(ingest["SQS_ENDPOINT_URL"])
    assert ingest["SQS_ENDPOINT_URL"] == "http://localstack:4566"
    assert set(config.KEY_ENVS) <= set(service_env("recovery"))
    # The admin DSN is the bootstrap's only; each workload has a login of its own.
    assert [name for name in APP_SERVICES if "PG_DSN" in service_env(name)] == ["bootstrap"]
    dsn = re.fullmatch(r"postgresql://([^:]+):(.+)@postgres:5432/(\w+)", service_env("bootstrap")["PG_DSN"])
    assert dsn, service_env("bootstrap")["PG_DSN"]
    assert (dsn.group(1), dsn.group(3)) == (ADMIN_USER, config.DATABASE_NAME)
    postgres = compose()["services"]["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == (ADMIN_USER, config.DATABASE_NAME)
    assert postgres["POSTGRES_PASSWORD"] == dsn.group(2)
    workload_dsns = {w.dsn_env for w in config.WORKLOADS.values()} | {recovery.DSN_ENV}
    wanted = {
        "bootstrap": workload_dsns,  # it creates the logins
        "ingest": {config.WORKLOADS[config.LOADER_ROLE].dsn_env},
        "transform": {config.WORKLOADS[config.TRANSFORMER_ROLE].dsn_env},
        "retention": {config.WORKLOADS[config.TRANSFORMER_ROLE].dsn_env},
        "recovery": {recovery.DSN_ENV},
        "cli": {config.WORKLOADS[r].dsn_env for r in (config.ANALYST_ROLE, config.PII_ADMIN_ROLE, config.AUDITOR_ROLE)},
        "seed": set(),
    }
    for name, dsns in wanted.items():
        assert workload_dsns & set(service_env(name)) == dsns, name
    for workload in config.WORKLOADS.values():
        login = re.fullmatch(
            r"postgresql://(\w+):\$\{(\w+):\?[^}]+\}@postgres:5432/loginvault",
            service_env("bootstrap")[workload.dsn_env],
        )
        assert login and login.groups() == (workload.local_login, workload.password_env), workload.dsn_env
    for service in ("bootstrap", "recovery"):
        login = re.fullmatch(
            r"postgresql://(\w+):\$\{(\w+):\?[^}]+\}@postgres:5432/loginvault", service_env(service)[recovery.DSN_ENV]
        )
        assert login and login.groups() == (recovery.LOGIN, recovery.PASSWORD_ENV), service


def test_compose_secrets_come_from_the_env_file_never_literals():
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?[^}]+\}", text))
    # The same names as .local/keys.env, so `docker compose --env-file .local/keys.env up` works.
    assert required == local_secrets()
    for service in APP_SERVICES:
        for name, value in service_env(service).items():
            if name in config.KEY_ENVS:
                assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", value), f"{service}: {name} must be ${{{name}:?…}}"
    assert not re.search(r"[0-9a-f]{32,}", text), "a literal key or password in docker-compose.yml"


def test_compose_start_order_and_health():
    services = compose()["services"]
    assert services["postgres"]["healthcheck"]["test"]
    assert services["localstack"]["healthcheck"]["test"]
    assert services["bootstrap"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("ingest", "transform", "recovery", "cli"):
        assert services[name]["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
    for name in ("ingest", "seed", "cli"):
        assert services[name]["depends_on"]["localstack"]["condition"] == "service_healthy"
    grace = re.fullmatch(r"(\d+)s", services["ingest"]["stop_grace_period"])
    assert grace and int(grace.group(1)) > sqs.MAX_WAIT_SECONDS + 30, "a stop needs a long poll plus one load"
    assert services["ingest"]["healthcheck"]["test"], "the ingest's /healthz is checked"
    command = services["transform"]["command"]
    assert command[:2] == ["transform", "--every"], "the transform service runs dbt build on an interval"
    grace = re.fullmatch(r"(\d+)s", services["transform"]["stop_grace_period"])
    assert grace and int(grace.group(1)) >= 60, "a stop lets the build in hand finish"


def test_compose_commands_are_valid_cli_invocations():
    services = compose()["services"]
    for name in APP_SERVICES:
        if "entrypoint" not in services[name]:
            parse_cli([interpolate(str(arg)) for arg in services[name]["command"]])
    transform = [interpolate(str(arg)) for arg in services["transform"]["command"]]
    assert transform == ["transform", "--every", "300", "build"]
    assert services["ingest"]["command"][:4] == ["--log-format", "json", "run", "--follow"]


def test_compose_recovery_service():
    service = compose()["services"]["recovery"]
    command = [interpolate(str(arg)) for arg in service["command"]]
    assert is_recovery_service(command)
    port = int(option(command, "--metrics-port"))
    assert published_ports(service) == {port}
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
    assert service["restart"] == "unless-stopped" and re.fullmatch(r"\d+s", service["stop_grace_period"])
    env = service_env("recovery")
    assert {name for name in env if name.endswith("_DSN")} == {recovery.DSN_ENV}, "its own login only"
    assert KEY_NAMES <= set(env), "the keys, and the keys before a rotation when .env has them"
    for name in keys.PREVIOUS_ENV.values():
        assert interpolate(env[name]) == "", f"{name}: optional (empty is unset)"
    assert interpolate(env["LOGINVAULT_RECOVERY_APPROVALS"]) == "0"
    assert interpolate(env["LOGINVAULT_RECOVERY_ANSWER_TTL_SECONDS"]) == "300"


def test_compose_keys_only_in_the_transform_and_the_recovery_service():
    holders = {name for name in APP_SERVICES if KEY_NAMES & set(service_env(name))}
    assert holders == KEY_SERVICES
    officer = service_env("cli")
    assert config.WORKLOADS[config.PII_ADMIN_ROLE].dsn_env in officer, "the cli service is the officer's"
    assert not KEY_NAMES & set(officer) and "PGOPTIONS" not in officer, "an officer's command holds no key"


def test_localstack_hook_creates_the_queues_of_the_local_stack():
    source = (ROOT / "deploy" / "localstack" / "ready.d" / "create_queues.py").read_text()
    constants = {
        node.targets[0].id: node.value.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
    }
    assert constants["QUEUE"] == config.QUEUE_NAME
    assert constants["MAX_RECEIVE_COUNT"] == config.DLQ_MAX_RECEIVE_COUNT
    assert constants["VISIBILITY_TIMEOUT"] == config.DEFAULT_VISIBILITY_TIMEOUT
    assert 'f"{QUEUE}-dlq"' in source and config.dlq_name("x") == "x-dlq"
    assert "RedrivePolicy" in source and "maxReceiveCount" in source


# ---------------------------------------------------------------- Kubernetes


@cache
def k8s_objects() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path.name}: incomplete object"
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects or "example" in path.name, f"{key} defined twice"
            objects.setdefault(key, {**doc, "_file": path.name})
    return objects


@cache
def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def deployed_objects() -> list[dict]:
    """The objects kustomization.yaml applies (not the examples)."""
    files = set(kustomization()["resources"])
    return [obj for obj in k8s_objects().values() if obj["_file"] in files]


def pod_spec(obj: dict) -> dict:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def workloads() -> list[dict]:
    return [obj for obj in deployed_objects() if obj["kind"] in {"Deployment", "Job", "CronJob"}]


def dockerfile_uid() -> int:
    return int([args for op, args in dockerfile_instructions() if op == "USER"][-1].split(":")[0])


def test_kustomization_applies_every_manifest_but_the_secret_examples():
    resources = kustomization()["resources"]
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    examples = {name for name in files if "example" in name}
    assert examples >= {"secrets.example.yaml", "external-secrets.example.yaml"}
    assert set(resources) == files - examples
    assert kustomization()["namespace"] == "loginvault"
    assert {image["name"] for image in kustomization()["images"]} == {"loginvault"}
    for obj in workloads():
        for container in pod_spec(obj)["containers"]:
            assert container["image"] == "loginvault", "the image is set once, by kustomization.yaml"


def test_ingest_deployment():
    deployment = k8s_objects()[("Deployment", "loginvault-ingest")]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    spec = pod_spec(deployment)
    assert spec["terminationGracePeriodSeconds"] > sqs.MAX_WAIT_SECONDS + 30, "a long poll plus one load"
    (container,) = spec["containers"]
    args = container["args"]
    assert args[:4] == ["--log-format", "json", "run", "--follow"]
    port = int(args[args.index("--metrics-port") + 1])
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": port}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"
    # Liveness does not follow SQS (an outage must not restart every pod); readiness does.
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/livez", "port": "metrics"}, probe
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert spec["serviceAccountName"] == "loginvault-ingest"


def test_every_pod_is_non_root_and_bounded():
    assert workloads()
    for obj in workloads():
        spec = pod_spec(obj)
        where = f"{obj['kind']} {obj['metadata']['name']}"
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True, where
        assert security["runAsUser"] == dockerfile_uid(), f"{where}: the Dockerfile's uid"
        assert security["seccompProfile"]["type"] == "RuntimeDefault", where
        mounts_needed = {"/tmp"}
        if any(arg == "transform" for c in spec["containers"] for arg in c.get("args", [])[:1]):
            # dbt writes target/ and logs/ in its project (Dockerfile: WORKDIR /app).
            mounts_needed |= {"/app/dbt_project/target", "/app/dbt_project/logs"}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where}: resources.{kind}"
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert mounts_needed <= mounts, f"{where}: writable {sorted(mounts_needed - mounts)}"
        volumes = {v["name"] for v in spec.get("volumes", [])}
        assert {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])} <= volumes, where


def test_dsns_and_keys_only_through_secret_key_refs():
    configmap = k8s_objects()[("ConfigMap", "loginvault-config")]
    leaked = [name for name in configmap["data"] if SECRET_NAME.search(name)]
    assert not leaked, f"secrets in the ConfigMap: {leaked}"
    assert not [obj for obj in deployed_objects() if obj["kind"] == "Secret"], "no Secret is applied with the manifests"
    allowed = code_env_names() | AWS_SDK_ENV | LIBPQ_ENV
    assert set(configmap["data"]) <= allowed, f"unknown settings: {sorted(set(configmap['data']) - allowed)}"
    for obj in workloads():
        for container in pod_spec(obj)["containers"]:
            where = f"{obj['metadata']['name']}/{container['name']}"
            for source in container.get("envFrom", []):
                assert set(source) == {"configMapRef"}, f"{where}: secrets by name only (secretKeyRef)"
            for var in container.get("env", []):
                assert var["name"] in allowed, f"{where}: {var['name']} is read by no code"
                if SECRET_NAME.search(var["name"]):
                    assert "value" not in var, f"{where}: {var['name']} inlined"
                    assert set(var["valueFrom"]) == {"secretKeyRef"}, f"{where}: {var['name']}"


def test_each_workload_gets_only_its_own_secrets():
    def secret_env(name: str, kind: str) -> set[str]:
        (container,) = pod_spec(k8s_objects()[(kind, name)])["containers"]
        return {var["name"] for var in container.get("env", []) if "valueFrom" in var}

    assert secret_env("loginvault-ingest", "Deployment") == {f"{config.LOADER_ROLE.upper()}_DSN"}
    transformer = {f"{config.TRANSFORMER_ROLE.upper()}_DSN", *config.KEY_ENVS}
    assert secret_env("loginvault-transform", "CronJob") == transformer
    # Freshness reads raw's load times: no key (keys are mounted only where a command uses them).
    assert secret_env("loginvault-source-freshness", "CronJob") == {f"{config.TRANSFORMER_ROLE.upper()}_DSN"}
    # Retention drops whole days as dbt's login: it reads no payload, so it gets no key.
    assert secret_env("loginvault-retention", "CronJob") == {f"{config.TRANSFORMER_ROLE.upper()}_DSN"}
    # The recovery service: its login, the keys, and the keys before a rotation (optional).
    assert secret_env("loginvault-recovery", "Deployment") == {recovery.DSN_ENV, *KEY_NAMES}
    # The bootstrap: the admin, and the three workloads' DSNs (optional) to create their logins.
    assert secret_env("loginvault-bootstrap", "Job") == {
        "PG_DSN",
        f"{config.LOADER_ROLE.upper()}_DSN",
        f"{config.TRANSFORMER_ROLE.upper()}_DSN",
        recovery.DSN_ENV,
    }


def test_secret_examples_are_placeholders_and_cover_every_reference():
    referenced = {
        (var["valueFrom"]["secretKeyRef"]["name"], var["valueFrom"]["secretKeyRef"]["key"])
        for obj in workloads()
        for container in pod_spec(obj)["containers"]
        for var in container.get("env", [])
        if "valueFrom" in var
    }
    examples = [obj for obj in k8s_objects().values() if obj["_file"] == "secrets.example.yaml"]
    provided = {(obj["metadata"]["name"], key) for obj in examples for key in obj["stringData"]}
    assert provided == referenced
    for obj in examples:
        for key, value in obj["stringData"].items():
            assert "REPLACE_ME" in value, f"{obj['metadata']['name']}.{key} must be a marked placeholder"
    external = load_yaml(K8S / "external-secrets.example.yaml")
    synced = {(obj["spec"]["target"]["name"], item["secretKey"]) for obj in external for item in obj["spec"]["data"]}
    assert synced == {(name, key) for name, key in referenced if name != ROTATION_SECRET}
    for obj in workloads():
        for container in pod_spec(obj)["containers"]:
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") == ROTATION_SECRET:
                    assert ref.get("optional") is True, f"{obj['metadata']['name']}: it exists during a rotation only"


def test_keda_scales_the_ingest_on_queue_length():
    scaled = k8s_objects()[("ScaledObject", "loginvault-ingest")]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "loginvault-ingest"
    assert 0 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    meta = trigger["metadata"]
    assert int(meta["queueLength"]) > 0
    configmap = k8s_objects()[("ConfigMap", "loginvault-config")]["data"]
    assert meta["queueURL"] == configmap["SQS_QUEUE_URL"] and meta["awsRegion"] == configmap["AWS_REGION"]
    # …kept so by kustomize: the ConfigMap is the one place for both.
    copied = {
        (r["source"]["fieldPath"], path)
        for r in kustomization()["replacements"]
        for target in r["targets"]
        if target["select"]["kind"] == "ScaledObject"
        for path in target["fieldPaths"]
    }
    assert copied == {
        ("data.SQS_QUEUE_URL", "spec.triggers.[type=aws-sqs-queue].metadata.queueURL"),
        ("data.AWS_REGION", "spec.triggers.[type=aws-sqs-queue].metadata.awsRegion"),
    }
    auth = k8s_objects()[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    assert auth["spec"]["podIdentity"]["provider"] == "aws"
    assert auth["spec"]["podIdentity"]["roleArn"].endswith(":role/loginvault-keda-scaler")


def test_cronjobs_never_overlap_and_run_dbt():
    cronjobs = {obj["metadata"]["name"]: obj for obj in deployed_objects() if obj["kind"] == "CronJob"}
    assert set(cronjobs) == {"loginvault-transform", "loginvault-source-freshness", "loginvault-retention"}
    for name, cronjob in cronjobs.items():
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid", name
        assert pod_spec(cronjob)["restartPolicy"] in {"Never", "OnFailure"}, name
    (transform,) = pod_spec(cronjobs["loginvault-transform"])["containers"]
    assert transform["args"] == ["transform", "build"]
    (retention,) = pod_spec(cronjobs["loginvault-retention"])["containers"]
    assert retention["args"][-2:] == ["retention", "apply"]
    assert cronjobs["loginvault-retention"]["spec"]["schedule"].split()[2:] == ["*", "*", "*"], "daily"


def test_bootstrap_job_and_service_accounts():
    job = k8s_objects()[("Job", "loginvault-bootstrap")]
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["bootstrap"]
    ingest_sa = k8s_objects()[("ServiceAccount", "loginvault-ingest")]
    arn = ingest_sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/loginvault-ingest", arn)
    db_sa = k8s_objects()[("ServiceAccount", "loginvault-db")]
    assert "annotations" not in db_sa["metadata"] and db_sa["automountServiceAccountToken"] is False
    own_accounts = {"loginvault-ingest", "loginvault-recovery"}  # each the Deployment of that name's only
    for obj in workloads():
        name = obj["metadata"]["name"]
        expected = name if name in own_accounts else "loginvault-db"
        assert pod_spec(obj)["serviceAccountName"] == expected, name


def test_recovery_deployment():
    deployment = k8s_objects()[("Deployment", "loginvault-recovery")]
    assert deployment["_file"] in kustomization()["resources"]
    assert deployment["spec"]["replicas"] == 2, "two replicas are safe: requests are taken with SKIP LOCKED"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ingest = k8s_objects()[("Deployment", "loginvault-ingest")]
    assert (
        not deployment["spec"]["selector"]["matchLabels"].items()
        <= ingest["spec"]["template"]["metadata"]["labels"].items()
    )
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    args = container["args"]
    assert is_recovery_service(args) and option(args, "--log-format") == "json"
    port = int(option(args, "--metrics-port"))
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": port}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, probe
    # Scraped by the PodMonitor, like the ingest.
    (monitor,) = load_yaml(K8S / "podmonitor.yaml")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    # Its own ServiceAccount: no AWS role (PostgreSQL only), no API token.
    assert spec["serviceAccountName"] == "loginvault-recovery" and spec["automountServiceAccountToken"] is False
    account = k8s_objects()[("ServiceAccount", "loginvault-recovery")]
    assert "annotations" not in account["metadata"] and account["automountServiceAccountToken"] is False
    # Its own Secret: its login and the keys; the keys before a rotation from the rotation's Secret.
    refs = {var["name"]: var["valueFrom"]["secretKeyRef"] for var in container["env"] if "valueFrom" in var}
    for name in (recovery.DSN_ENV, *config.KEY_ENVS):
        assert refs[name] == {"name": "loginvault-recovery", "key": name}, name
    for name in keys.PREVIOUS_ENV.values():
        assert refs[name] == {"name": ROTATION_SECRET, "key": name, "optional": True}, name
    example = k8s_objects()[("Secret", "loginvault-recovery")]["stringData"][recovery.DSN_ENV]
    assert example.startswith(f"postgresql://{recovery.LOGIN}:") and example.endswith("sslmode=require")
    settings_ = k8s_objects()[("ConfigMap", "loginvault-config")]["data"]
    assert settings_["LOGINVAULT_RECOVERY_APPROVALS"] in {"0", "1"}
    assert int(settings_["LOGINVAULT_RECOVERY_ANSWER_TTL_SECONDS"]) > 0


def test_only_the_transform_and_the_recovery_service_mount_the_keys():
    def mounts_keys(obj: dict) -> bool:
        spec = pod_spec(obj)
        for container in spec["containers"]:
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef", {})
                if var["name"] in KEY_NAMES or ref.get("key") in KEY_NAMES:
                    return True
            if any("secretRef" in source for source in container.get("envFrom", [])):
                return True
        return any("secret" in volume or "projected" in volume for volume in spec.get("volumes", []))

    holders = {obj["metadata"]["name"] for obj in workloads() if mounts_keys(obj)}
    assert KEY_WORKLOADS <= holders, f"{sorted(KEY_WORKLOADS - holders)} need the keys"
    assert holders - KEY_WORKLOADS - KEYS_MOUNTED_BUT_UNUSED == set(), "a workload that must hold no key mounts one"
    fixed = KEYS_MOUNTED_BUT_UNUSED - holders
    assert not fixed, f"{sorted(fixed)} no longer mount the keys: delete them from KEYS_MOUNTED_BUT_UNUSED"


def pod_labels(obj: dict) -> dict[str, str]:
    template = obj["spec"]["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else obj["spec"]["template"]
    return template["metadata"]["labels"]


def selects(selector: dict, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "matchLabels only: what these tests can evaluate"
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def test_network_policies_allow_only_the_database_aws_dns_and_metrics():
    policies = [obj for obj in deployed_objects() if obj["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].keys() & {"ingress", "egress"}]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}, "everything denied first"
    allowed_egress = {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 443)}
    for obj in workloads():
        where, labels = obj["metadata"]["name"], pod_labels(obj)
        mine = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
        egress = [rule for p in mine for rule in p["spec"].get("egress", [])]
        assert all(rule.get("to") and rule.get("ports") for rule in egress), f"{where}: an egress rule to anywhere"
        ports = {(port["protocol"], port["port"]) for rule in egress for port in rule["ports"]}
        assert ports <= allowed_egress, f"{where}: egress to {sorted(ports - allowed_egress)}"
        assert {("UDP", 53), ("TCP", 5432)} <= ports, f"{where}: DNS and the database"
        # AWS (443) for the workload with an AWS role (IRSA) only: the ingest.
        irsa = pod_spec(obj)["serviceAccountName"] == "loginvault-ingest"
        assert (("TCP", 443) in ports) == irsa, f"{where}: AWS endpoints {'missing' if irsa else 'allowed'}"
        ingress = {port["port"] for p in mine for rule in p["spec"].get("ingress", []) for port in rule["ports"]}
        served = {port["name"] for c in pod_spec(obj)["containers"] for port in c.get("ports", [])}
        assert ingress == ({"metrics"} & served), f"{where}: ingress to {sorted(ingress)}, serves {sorted(served)}"
        for p in mine:
            for rule in p["spec"].get("ingress", []):
                assert all("namespaceSelector" in peer for peer in rule["from"]), f"{where}: ingress from anywhere"


def test_pod_disruption_budgets_cover_every_deployment_and_the_builds():
    budgets = [obj for obj in deployed_objects() if obj["kind"] == "PodDisruptionBudget"]
    for obj in workloads():
        covering = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(obj))]
        if obj["kind"] == "Deployment":
            (budget,) = covering
            # At most one pod down at a time, and never a budget that would block every drain.
            assert budget["spec"]["maxUnavailable"] == 1, obj["metadata"]["name"]
        elif obj["metadata"]["name"] in {"loginvault-transform", "loginvault-retention"}:
            (budget,) = covering
            assert budget["spec"]["minAvailable"] == 1, "a running build is not evicted mid-way"


def test_k8s_commands_are_valid_cli_invocations():
    for obj in workloads():
        for container in pod_spec(obj)["containers"]:
            parse_cli(container["args"])


def test_kustomize_renders_the_manifests():
    """The kustomization rendered (tests/kustomize.py: kustomize's rules for the fields it uses)."""
    rendered = kustomize.render(K8S)
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in rendered}
    generated = {("ConfigMap", gen["name"]) for gen in kustomization().get("configMapGenerator", [])}
    assert kinds == {(obj["kind"], obj["metadata"]["name"]) for obj in deployed_objects()} | generated
    image = kustomization()["images"][0]
    configmap = next(doc for doc in rendered if doc["metadata"]["name"] == "loginvault-config")["data"]
    for doc in rendered:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "loginvault"
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "loginvault"
        if doc["kind"] in {"Deployment", "Job", "CronJob"}:
            for container in pod_spec(doc)["containers"]:
                assert container["image"] == f"{image['newName']}:{image['newTag']}"
        if doc["kind"] == "ScaledObject":
            (trigger,) = doc["spec"]["triggers"]
            assert trigger["metadata"]["queueURL"] == configmap["SQS_QUEUE_URL"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not on PATH")
def test_kustomize_rendering_is_kubectls():
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    by_key = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    assert by_key == {(d["kind"], d["metadata"]["name"]): d for d in kustomize.render(K8S)}


# The custom resources' API groups: KEDA, the prometheus-operator, External Secrets. No schema of
# theirs is at hand offline (kubernetes-validate carries Kubernetes' own); the tests above and
# tests/unit/test_monitoring.py check those objects field by field.
CRD_GROUPS = ("keda.sh/", "monitoring.coreos.com/", "external-secrets.io/")


def test_k8s_objects_match_the_kubernetes_schemas():
    """Every object the kustomization renders (the ConfigMap it generates included) and the
    examples, against the Kubernetes JSON schemas that kubernetes-validate (PyPI) carries: strict
    validation, offline, for the oldest and the newest Kubernetes versions supported."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    examples = [obj for obj in k8s_objects().values() if "example" in obj["_file"]]
    checked = set()
    for obj in [*kustomize.render(K8S), *examples]:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        manifest = {key: value for key, value in obj.items() if key != "_file"}
        for version in ("1.29.0", "1.37.0"):
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): {exc}")
        checked.add(obj["kind"])
    assert checked >= {"Deployment", "CronJob", "Job", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap", "Secret"}


# ---------------------------------------------------------------- Terraform


@cache
def terraform() -> dict[str, dict]:
    """Every block of deploy/terraform/*.tf: {"resource.aws_sqs_queue.login": body, "variable.region": …}."""
    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    blocks: dict[str, dict] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as f:
            parsed = hcl2.load(f, serialization_options=options)
        for kind in ("resource", "data", "ephemeral"):
            for entry in parsed.get(kind, []):
                for type_, named in entry.items():
                    for name, body in named.items():
                        blocks[f"{kind}.{type_}.{name}"] = body
        for kind in ("variable", "output"):
            for entry in parsed.get(kind, []):
                for name, body in entry.items():
                    blocks[f"{kind}.{name}"] = body
        for entry in parsed.get("terraform", []):
            blocks.setdefault("terraform", {}).update(entry)
    return blocks


def tf_value(value):
    """A literal, or the default of the variable it references (`${var.x}`)."""
    match = re.fullmatch(r"\$\{var\.(\w+)\}", str(value))
    return terraform()[f"variable.{match.group(1)}"]["default"] if match else value


def test_terraform_pins_its_providers():
    providers = terraform()["terraform"]["required_providers"][0]
    assert providers, "required_providers"
    for name, spec in providers.items():
        assert spec["source"].startswith("hashicorp/") and re.match(r"~> \d+\.\d+", spec["version"]), name


def test_terraform_queue_redrive_and_encryption():
    tf = terraform()
    queue, dlq = tf["resource.aws_sqs_queue.login"], tf["resource.aws_sqs_queue.login_dlq"]
    assert tf_value(queue["name"]) == config.QUEUE_NAME
    assert dlq["name"] == "${var.queue_name}-dlq" and config.dlq_name(config.QUEUE_NAME) == "login-queue-dlq"
    redrive = queue["redrive_policy"]
    assert "deadLetterTargetArn = aws_sqs_queue.login_dlq.arn" in redrive
    assert int(re.search(r"maxReceiveCount\s*=\s*(\d+)", redrive).group(1)) == config.DLQ_MAX_RECEIVE_COUNT
    assert tf_value(queue["visibility_timeout_seconds"]) == config.DEFAULT_VISIBILITY_TIMEOUT
    for body in (queue, dlq):
        assert re.fullmatch(r"\$\{aws_kms_key\.\w+\.arn\}", body["kms_master_key_id"])
    keys = {name: body for name, body in tf.items() if name.startswith("resource.aws_kms_key.")}
    assert keys
    for name, body in keys.items():
        assert body["enable_key_rotation"] is True, name
        assert body["policy"].startswith("${data.aws_iam_policy_document."), f"{name}: an explicit key policy"


def test_terraform_database_is_private_encrypted_and_backed_up():
    tf = terraform()
    db = tf["resource.aws_db_instance.loginvault"]
    assert db["engine"] == "postgres" and str(tf_value(db["engine_version"])).split(".")[0] == "15"
    assert db["storage_encrypted"] is True and db["kms_key_id"].startswith("${aws_kms_key.")
    assert db["publicly_accessible"] is False
    assert db["deletion_protection"] is True and db["skip_final_snapshot"] is False
    assert db["db_subnet_group_name"] == "${aws_db_subnet_group.loginvault.name}"
    assert tf_value(db["backup_retention_period"]) >= 7
    validation = tf["variable.db_backup_retention_days"]["validation"][0]["condition"]
    assert ">= 7" in validation, "a tfvars value below 7 days must be refused"
    assert db["manage_master_user_password"] is True, "the master password never enters the state"
    assert (db["db_name"], db["username"]) == (config.DATABASE_NAME, ADMIN_USER)
    params = tf["resource.aws_db_parameter_group.loginvault"]
    assert db["parameter_group_name"] == "${aws_db_parameter_group.loginvault.name}"
    assert params["family"] == "postgres15"
    assert {p["name"]: p["value"] for p in params["parameter"]}["rds.force_ssl"] == "1"


def test_terraform_parameter_group_logs_no_bind_parameters():
    """A slow recovery lookup or erasure must not write its looked-up value or user id to the log."""
    params = {p["name"]: p["value"] for p in terraform()["resource.aws_db_parameter_group.loginvault"]["parameter"]}
    assert params["log_parameter_max_length"] == "0"
    assert params["log_parameter_max_length_on_error"] == "0"
    assert params.get("log_statement", "none") == "none", "never log every statement"


def test_terraform_pii_keys_live_in_secrets_manager_only():
    tf = terraform()
    secrets = {
        body["name"].rsplit("/", 1)[-1]: name for name, body in tf.items() if ".aws_secretsmanager_secret." in name
    }
    assert set(secrets) == {*config.KEY_ENVS, recovery.DSN_ENV}
    for env_name, block in secrets.items():
        assert tf[block]["kms_key_id"].startswith("${aws_kms_key."), env_name
        version = tf[block.replace("aws_secretsmanager_secret.", "aws_secretsmanager_secret_version.")]
        assert "secret_string" not in version, f"{env_name}: a plain secret_string would be kept in the state"
        (generator,) = re.findall(r"\$\{(ephemeral\.\w+\.\w+)\.random_password\}", version["secret_string_wo"])
        password = tf[generator]
        assert password["password_length"] >= config.MIN_KEY_BYTES, env_name
        if env_name in config.KEY_ENVS:
            assert version["secret_string_wo"] == f"${{{generator}.random_password}}", f"{env_name}: the key alone"


def test_terraform_recovery_service_dsn_secret():
    tf = terraform()
    secret = tf["resource.aws_secretsmanager_secret.recovery_service_dsn"]
    version = tf["resource.aws_secretsmanager_secret_version.recovery_service_dsn"]
    assert (
        secret["name"] == f"${{var.name_prefix}}/{recovery.DSN_ENV}" and tf_value("${var.name_prefix}") == "loginvault"
    )
    (generator,) = re.findall(r"\$\{(ephemeral\.\w+\.\w+)\.random_password\}", version["secret_string_wo"])
    assert tf[generator]["exclude_punctuation"] is True, "the password sits in a URL: letters and digits only"
    db = "aws_db_instance.loginvault"
    assert version["secret_string_wo"] == (
        f"postgresql://${{var.recovery_service_login}}:${{{generator}.random_password}}"
        f"@${{{db}.address}}:${{{db}.port}}/${{{db}.db_name}}?sslmode=require"
    )
    assert tf_value("${var.recovery_service_login}") == recovery.LOGIN
    assert version["secret_string_wo_version"] == "${var.recovery_service_password_version}"
    # The ExternalSecret syncs it into the Secret the recovery Deployment and the bootstrap Job read.
    (external,) = [
        obj
        for obj in load_yaml(K8S / "external-secrets.example.yaml")
        if obj["metadata"]["name"] == "loginvault-recovery"
    ]
    remote = {item["secretKey"]: item["remoteRef"]["key"] for item in external["spec"]["data"]}
    assert remote[recovery.DSN_ENV] == f"loginvault/{recovery.DSN_ENV}"


def ingest_sqs_client_calls() -> set[str]:
    """The boto3 SQS operations `loginvault run` can make: the Queue methods that ingest/consumer/run.py and the
    consumer (ingest/consumer/) call, followed through the Queue methods they call in turn."""
    queue_class = next(
        n
        for n in ast.walk(ast.parse(Path(sqs.__file__).read_text()))
        if isinstance(n, ast.ClassDef) and n.name == "Queue"
    )
    methods = {n.name: n for n in queue_class.body if isinstance(n, ast.FunctionDef)}

    def attribute_calls(node: ast.AST, owner: str) -> set[str]:
        return {
            call.func.attr
            for call in ast.walk(node)
            if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and (
                (isinstance(call.func.value, ast.Name) and call.func.value.id == owner)
                or (isinstance(call.func.value, ast.Attribute) and call.func.value.attr == owner)
            )
        }

    consumer = [ast.parse(path.read_text()) for path in sorted((ROOT / "ingest" / "consumer").glob("*.py"))]
    todo = set().union(*(attribute_calls(tree, "queue") for tree in consumer)) & set(methods)
    assert todo, "no Queue method found in the ingest's run path"
    seen, operations = set(), set()
    while todo:
        name = todo.pop()
        seen.add(name)
        operations |= attribute_calls(methods[name], "client")
        todo |= (attribute_calls(methods[name], "self") & set(methods)) - seen
    return operations


def dlq_depth_client_calls() -> set[str]:
    """The SQS operations behind the ingest's DLQ gauge: sqs.dead_letter_queue and Queue.depth."""
    tree = ast.parse(Path(sqs.__file__).read_text())
    wanted = {"dead_letter_queue", "depth", "attributes"}
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in wanted]
    return {
        call.func.attr
        for function in functions
        for call in ast.walk(function)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in SQS_IAM_ACTIONS
    }


def test_terraform_ingest_policy_is_least_privilege_and_enough():
    tf = terraform()
    policy = tf["resource.aws_iam_policy.ingest"]
    document = tf[policy["policy"].removeprefix("${").removesuffix(".json}")]
    statements = document["statement"]
    sqs_statements = [s for s in statements if any(a.startswith("sqs:") for a in s["actions"])]
    (consume,) = [s for s in sqs_statements if s["resources"] != ["${aws_sqs_queue.login_dlq.arn}"]]
    assert set(consume["actions"]) == INGEST_SQS_ACTIONS
    assert consume["resources"] == ["${aws_sqs_queue.login.arn}"], "this queue only (not *)"
    # The DLQ: its depth only (the gauge behind the DLQ alert), never a message.
    (dlq,) = [s for s in sqs_statements if s is not consume]
    assert set(dlq["actions"]) == {"sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
    assert set(dlq["actions"]) >= {SQS_IAM_ACTIONS[call] for call in dlq_depth_client_calls()}
    (decrypt,) = [s for s in statements if s not in sqs_statements]
    assert decrypt["actions"] == ["kms:Decrypt"] and decrypt["resources"] == ["${aws_kms_key.sqs.arn}"]
    assert all(s.get("effect", "Allow") == "Allow" and "*" not in "".join(s["actions"]) for s in statements)
    # Enough for what the code does.
    calls = ingest_sqs_client_calls()
    assert {"receive_message", "delete_message_batch", "change_message_visibility_batch"} <= calls
    needed = {SQS_IAM_ACTIONS[call] for call in calls}
    assert needed <= set(consume["actions"]), f"the ingest calls {sorted(needed - set(consume['actions']))}"
    attachment = tf["resource.aws_iam_role_policy_attachment.ingest"]
    assert (attachment["role"], attachment["policy_arn"]) == (
        "${aws_iam_role.ingest.name}",
        "${aws_iam_policy.ingest.arn}",
    )


def test_terraform_irsa_trust_matches_the_k8s_service_account():
    tf = terraform()
    role = tf["resource.aws_iam_role.ingest"]
    trust = tf[role["assume_role_policy"].removeprefix("${").removesuffix(".json}")]
    (statement,) = trust["statement"]
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert statement["principals"][0]["type"] == "Federated"
    conditions = {c["variable"].rsplit(":", 1)[-1]: c["values"] for c in statement["condition"]}
    assert conditions["aud"] == ["sts.amazonaws.com"]
    (subject,) = conditions["sub"]
    namespace, account = tf_value("${var.k8s_namespace}"), tf_value("${var.ingest_service_account}")
    assert subject == "system:serviceaccount:${var.k8s_namespace}:${var.ingest_service_account}"
    assert namespace == kustomization()["namespace"]
    assert ("ServiceAccount", account) in k8s_objects()
    # The role the ServiceAccount annotation names is this one (with the default prefix).
    assert role["name"] == "${var.name_prefix}-ingest" and tf_value("${var.name_prefix}") == "loginvault"
    keda = tf["resource.aws_iam_role.keda_scaler"]
    assert keda["name"] == "${var.name_prefix}-keda-scaler"
    assert tf["data.aws_iam_policy_document.keda_scaler"]["statement"][0]["actions"] == ["sqs:GetQueueAttributes"]


def test_terraform_outputs_what_the_manifests_need():
    outputs = {name.removeprefix("output.") for name in terraform() if name.startswith("output.")}
    assert {
        "queue_url",
        "ingest_role_arn",
        "keda_scaler_role_arn",
        "db_address",
        "db_master_user_secret_arn",
        "hmac_key_secret_arn",
        "encryption_key_secret_arn",
        "recovery_service_dsn_secret_arn",
    } <= outputs
    example = (TERRAFORM / "terraform.tfvars.example").read_text()
    required = {
        name.removeprefix("variable.")
        for name, body in terraform().items()
        if name.startswith("variable.") and "default" not in body
    }
    for name in required:
        assert re.search(rf"^{name}\s*=", example, re.M), f"terraform.tfvars.example lacks {name}"


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
def test_terraform_fmt():
    out = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout


# ---------------------------------------------------------------- GitHub workflow


@cache
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def job_script(job: str) -> str:
    return "\n".join(step.get("run", "") for step in workflow()["jobs"][job]["steps"])


def test_workflow_jobs():
    wf = workflow()
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    assert set(wf["jobs"]) == {"test", "dbt"}
    for name, job in wf["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest", name
        assert job["timeout-minutes"] <= 90, name
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"actions/[\w-]+@v\d+", step["uses"]), f"{name}: pin {step['uses']}"
        setup = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python"))
        assert setup["with"]["cache"] == "pip" and "requirements/dev.lock" in setup["with"]["cache-dependency-path"]
    test = job_script("test")
    assert "bash .ci/run" in test and "apt-get install" in test and "postgresql" in test


def test_workflow_dbt_gate():
    job = workflow()["jobs"]["dbt"]
    service = job["services"]["postgres"]
    assert service["image"] == "postgres:15"
    assert "pg_isready" in service["options"]
    dsn = re.fullmatch(r"postgresql://([^:]+):([^@]+)@(?:127\.0\.0\.1|localhost):5432/(\w+)", job["env"]["PG_DSN"])
    assert dsn, job["env"]["PG_DSN"]
    assert dsn.groups() == (
        service["env"]["POSTGRES_USER"],
        service["env"]["POSTGRES_PASSWORD"],
        service["env"]["POSTGRES_DB"],
    )
    assert dsn.group(3) == config.DATABASE_NAME
    script = job_script("dbt")
    assert "openssl rand -hex 32" in script and "::add-mask::" in script
    for name in config.KEY_ENVS:
        assert name in script
    invocations = ingest_invocations(script)
    commands = [args[0] for args in invocations]
    # bootstrap, then queues, seed, ingest, and the gate, in that order.
    order = [commands.index(c) for c in ("bootstrap", "stack", "seed", "run", "transform")]
    assert order == sorted(order)
    assert ["transform", "build", "--warn-error"] in invocations
    for args in invocations:
        parse_cli(args)


def vendored_schema(name: str) -> dict:
    """A JSON schema that check-jsonschema (PyPI) ships: the Compose specification, GitHub's workflows."""
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is not installed")
    from importlib.resources import files

    return json.loads((files("check_jsonschema.builtin_schemas.vendor") / name).read_text())


def schema_errors(schema: dict, document: dict) -> list[str]:
    import jsonschema

    # The Compose schema names draft-07 by an https URL jsonschema does not know.
    draft7 = "json-schema.org/draft-07/schema" in schema.get("$schema", "")
    validator = (jsonschema.Draft7Validator if draft7 else jsonschema.validators.validator_for(schema))(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_specification():
    assert schema_errors(vendored_schema("compose-spec.json"), compose()) == []


def test_workflow_matches_githubs_workflow_schema():
    wf = dict(workflow())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1's bare `on` is true; GitHub reads YAML 1.2
    assert schema_errors(vendored_schema("github-workflows.json"), wf) == []


# ---------------------------------------------------------------- runbook


def test_runbook_covers_operations_and_names_real_commands():
    text = (ROOT / "docs" / "operations.md").read_text()
    headings = " ".join(re.findall(r"^#+ (.+)$", text, re.M)).lower()
    # Archival of raw gave way to the retention window (main): the runbook covers that instead.
    for topic in (
        "deploy",
        "scale",
        "rotate",
        "recover",
        "recovery service",
        "dead-letter",
        "backup",
        "retention",
        "erase",
        "alert",
    ):
        assert topic in headings, f"docs/operations.md has no section on {topic}"
    blocks = re.split(r"^\s*```.*$", text, flags=re.M)  # prose, code, prose, code, … (fences in lists too)
    code = blocks[1::2] + [span for prose in blocks[0::2] for span in re.findall(r"`([^`\n]+)`", prose)]
    invocations = [args for snippet in code for args in ingest_invocations(snippet) if args and args[0] != "…"]
    subcommands = set(cli.build_parser().children)
    used = {args[0] for args in invocations}
    assert {"recover", "dlq", "bootstrap", "transform"} <= used
    assert used <= subcommands, f"unknown commands in the runbook: {sorted(used - subcommands)}"
    for args in invocations:
        parse_cli(args)


def test_runbook_says_how_the_recovery_service_runs_and_what_to_do_when_it_is_down():
    text = (ROOT / "docs" / "operations.md").read_text()
    start = re.search(r"^## Recovery service$", text, re.M)
    assert start, "docs/operations.md has no section Recovery service"
    end = re.search(r"^## ", text[start.end() :], re.M)
    section = " ".join(text[start.end() : start.end() + end.start()].split())
    deployment = k8s_objects()[("Deployment", "loginvault-recovery")]
    for fact in (
        "loginvault-recovery",  # the Deployment, its ServiceAccount and its Secret
        f"{deployment['spec']['replicas']} replicas",
        "FOR UPDATE SKIP LOCKED",
        recovery.DSN_ENV,
        recovery.LOGIN,
        recovery.ROLE,
        *(f"`{name}`" for name in recovery.SETTINGS_ENV),
        *recovery.METRICS,
        *(f"*{alert}*" for alert in ("LoginvaultRecoveryRequestWaiting", "LoginvaultRecoveryServiceDown")),
        "When the service is down",
        "a request that times out on the officer's side is cancelled by the command; the service never"
        " answers a cancelled request",
    ):
        assert fact.lower() in section.lower(), f"the Recovery service section does not say {fact!r}"
