"""Monitoring as code: the alerts of deploy/k8s/prometheusrule.yaml (promtool check rules, and
promtool test rules on tests/data/promtool/: each alert fires once and is held back once), their
runbook sections, the PodMonitor, and the Grafana dashboard (its PromQL valid, its metrics the
ones the code exports, provisioned for Grafana's sidecar).

promtool is Debian's `prometheus` package: without it these tests are skipped, but fail under
CI=true (.ci/run installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import recovery_interface as recovery
import yaml

from ingest import config

ROOT = config.REPO_ROOT
K8S = ROOT / "deploy" / "k8s"
RULE = K8S / "prometheusrule.yaml"
DASHBOARD = "grafana/loginvault-dashboard.json"
PROMTOOL_TESTS = ROOT / "tests" / "data" / "promtool"
RULES_FILE = "loginvault-rules.yaml"  # the name the promtool tests' rule_files expect
RUNBOOK = ROOT / "docs" / "operations.md"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus); CI runs this test")
    return found


def run_promtool(*args: str, cwd: Path) -> str:
    out = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@cache
def prometheus_rule() -> dict:
    (rule,) = yaml.safe_load_all(RULE.read_text())
    return rule


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for group in prometheus_rule()["spec"]["groups"] for rule in group["rules"]}


def write_rules(directory: Path) -> Path:
    """The PrometheusRule's spec (groups of rules) as a Prometheus rule file."""
    path = directory / RULES_FILE
    path.write_text(yaml.safe_dump(prometheus_rule()["spec"], sort_keys=False))
    return path


@cache
def dashboard() -> dict:
    return json.loads((K8S / DASHBOARD).read_text())


def dashboard_targets() -> list[tuple[str, dict]]:
    """(panel title, target) of every query of the dashboard."""
    return [(panel["title"], target) for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def as_promql(expr: str) -> str:
    """A dashboard query as Prometheus reads it once Grafana has put in its variables."""
    return expr.replace("$__rate_interval", "2m").replace("$__range", "1h")


@cache
def exported_metrics() -> frozenset[str]:
    """Every metric name the code writes as a string: the families of ingest/ and its subpackages."""
    names = set()
    for path in (ROOT / "ingest").rglob("*.py"):
        names.update(re.findall(r"[\"'](loginvault_[a-z_]+)[\"']", path.read_text()))
    return frozenset(names)


def is_exported(name: str) -> bool:
    """A sample name of an exported family: itself, a counter's _total, a histogram's series."""
    families = exported_metrics()
    return name in families or any(
        name == family + suffix for family in families for suffix in ("_total", *HISTOGRAM_SUFFIXES)
    )


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def alerts_section() -> str:
    text = RUNBOOK.read_text()
    start = re.search(r"^## Alerts.*$", text, re.M)
    assert start, "docs/operations.md has no Alerts section"
    end = re.search(r"^## ", text[start.end() :], re.M)
    return text[start.start() : start.end() + (end.start() if end else len(text))]


# ---------------------------------------------------------------- alerts


def test_rules_pass_promtool_check(tmp_path):
    out = run_promtool("check", "rules", str(write_rules(tmp_path)), cwd=tmp_path)
    assert f"SUCCESS: {len(alerts())} rules found" in out


def test_promtool_unit_tests_pass(tmp_path):
    write_rules(tmp_path)
    tests = sorted(PROMTOOL_TESTS.glob("*.test.yaml"))
    assert tests
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
    out = run_promtool("test", "rules", *(test.name for test in tests), cwd=tmp_path)
    assert out.count("SUCCESS") == len(tests), out


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not():
    fired, quiet = set(), set()
    for path in PROMTOOL_TESTS.glob("*.test.yaml"):
        spec = yaml.safe_load(path.read_text())
        assert spec["rule_files"] == [RULES_FILE], path.name
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fired == set(alerts()), f"no firing test for {sorted(set(alerts()) - fired)}"
    assert quiet == set(alerts()), f"no quiet test for {sorted(set(alerts()) - quiet)}"


def test_prometheus_rule_object():
    rule = prometheus_rule()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert RULE.name in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    names = [group["name"] for group in rule["spec"]["groups"]]
    assert len(names) == len(set(names)) and all(name.startswith("loginvault-") for name in names)
    assert len(alerts()) == sum(len(group["rules"]) for group in rule["spec"]["groups"]), "an alert named twice"


def test_every_alert_has_severity_summary_description_and_its_runbook_section():
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.M)
    anchors = {github_anchor(heading) for heading in headings}
    documented = set(re.findall(r"^### (Loginvault\w+)\s*$", alerts_section(), re.M))
    for name, rule in alerts().items():
        assert name.startswith("Loginvault") and rule["expr"].strip(), name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        url, _, anchor = annotations["runbook_url"].partition("#")
        assert url.endswith("/docs/operations.md") and anchor == name.lower(), name
        assert anchor in anchors, f"{name}: docs/operations.md has no section #{anchor}"
    assert documented == set(alerts()), "the runbook's alert sections and the rules differ"


def test_rules_and_dashboard_use_only_metrics_the_code_exports():
    assert {"loginvault_dlq_messages", "loginvault_transform_builds"} <= exported_metrics()
    queries = [(f"alert {name}", rule["expr"]) for name, rule in alerts().items()]
    queries += [(f"panel {title!r}", target["expr"]) for title, target in dashboard_targets()]
    for where, expr in queries:
        used = set(re.findall(r"\bloginvault_[a-z_]+", expr))
        assert used, f"{where}: no loginvault metric"
        unknown = sorted(name for name in used if not is_exported(name))
        assert not unknown, f"{where}: {unknown} are exported by no code"


# ---------------------------------------------------------------- dashboard and scraping


def test_dashboard_queries_are_valid_promql(tmp_path):
    rules = [
        {"record": f"loginvault_dashboard:query{i}", "expr": as_promql(target["expr"])}
        for i, (_, target) in enumerate(dashboard_targets())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in out


def test_dashboard_shows_throughput_lag_freshness_failures_and_durations():
    board = dashboard()
    assert board["uid"] == "loginvault" and board["title"]
    (variable,) = board["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for title, target in dashboard_targets():
        assert target["datasource"]["uid"] == "${" + variable["name"] + "}", title
    queried = " ".join(target["expr"] for _, target in dashboard_targets())
    for metric in (
        "loginvault_messages_received_total",  # throughput
        "loginvault_messages_landed_total",
        "loginvault_messages_deleted_total",
        "loginvault_queue_messages",  # lag
        "loginvault_dlq_messages",
        "loginvault_last_successful_load_timestamp_seconds",
        "loginvault_user_logins_newest_row_age_seconds",  # freshness
        "loginvault_messages_refused_total",  # failures
        "loginvault_delete_failures_total",
        "loginvault_stale_receipt_handles_total",
        'loginvault_transform_builds_total{outcome="failure"}',
        "loginvault_transform_build_duration_seconds_bucket",  # durations
        "loginvault_recovery_requests_total",  # the recovery service
        "loginvault_recovery_oldest_waiting_request_seconds",
        "loginvault_recovery_budget_refusals_total",
        "loginvault_recovery_last_poll_timestamp_seconds",
    ):
        assert metric in queried, metric


def test_dashboard_has_a_row_for_the_recovery_service():
    panels = dashboard()["panels"]
    rows = [i for i, panel in enumerate(panels) if panel["type"] == "row"]
    (start,) = [i for i in rows if panels[i]["title"] == "Recovery service"]
    end = min([i for i in rows if i > start], default=len(panels))
    queries = [target["expr"] for panel in panels[start + 1 : end] for target in panel.get("targets", [])]
    assert queries
    assert all(re.search(r"\bloginvault_recovery_", expr) for expr in queries), "only recovery metrics in its row"
    assert any(re.search(r"by \((kind, outcome|outcome, kind)\)", expr) for expr in queries), (
        "requests by kind and outcome"
    )
    for family in recovery.METRICS:
        assert any(family in expr for expr in queries), family


def test_dashboard_is_provisioned_for_grafanas_sidecar():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (generator,) = [g for g in kustomization["configMapGenerator"] if DASHBOARD in g.get("files", [])]
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}
    assert generator["options"]["disableNameSuffixHash"] is True  # one ConfigMap, updated in place
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with kustomize) is not on PATH: the rendered ConfigMap is not checked")
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (configmap,) = [
        doc
        for doc in yaml.safe_load_all(out.stdout)
        if doc and doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == generator["name"]
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"][Path(DASHBOARD).name]) == dashboard()
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    kubernetes_validate.validate(configmap, "1.29.0", strict=True)


def test_recovery_alerts_watch_the_recovery_services_metrics():
    rules = alerts()
    waiting = rules["LoginvaultRecoveryRequestWaiting"]
    assert "loginvault_recovery_oldest_waiting_request_seconds" in waiting["expr"] and waiting["for"] == "1m"
    assert re.search(r"> 60\b", waiting["expr"]), "more than a minute"
    down = rules["LoginvaultRecoveryServiceDown"]
    assert "absent(loginvault_recovery_" in down["expr"] and down["for"] == "5m"
    assert "loginvault_recovery_budget_refusals_total" in rules["LoginvaultRecoveryBudgetRefusals"]["expr"]
    (group,) = [g for g in prometheus_rule()["spec"]["groups"] if g["name"] == "loginvault-recovery"]
    assert {rule["alert"] for rule in group["rules"]} == {
        name for name in rules if name.startswith("LoginvaultRecovery")
    }


def test_podmonitor_scrapes_the_ingests_metrics_port():
    (monitor,) = yaml.safe_load_all((K8S / "podmonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    (deployment,) = yaml.safe_load_all((K8S / "deployment-ingest.yaml").read_text())
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert endpoint["port"] in {port["name"] for port in container["ports"]}
    assert endpoint["path"] == deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
