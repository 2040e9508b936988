"""Monitoring as code: the alerts of deploy/k8s/prometheusrule.yaml (promtool check rules, and
promtool test rules on tests/data/promtool/: each alert fires once and is held back once), their
runbook sections and metrics, and the PodMonitor.

promtool is Debian's `prometheus` package: without it these tests are skipped, but fail under
CI=true (.ci/run installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

from ingest import config

ROOT = config.REPO_ROOT
K8S = ROOT / "deploy" / "k8s"
RULE = K8S / "prometheusrule.yaml"
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
def exported_metrics() -> frozenset[str]:
    """Every metric name the code writes as a string: the families of ingest/*.py."""
    names = set()
    for path in (ROOT / "ingest").glob("*.py"):
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


def test_rules_use_only_metrics_the_code_exports():
    assert {"loginvault_dlq_messages", "loginvault_transform_builds"} <= exported_metrics()
    queries = [(f"alert {name}", rule["expr"]) for name, rule in alerts().items()]
    for where, expr in queries:
        used = set(re.findall(r"\bloginvault_[a-z_]+", expr))
        assert used, f"{where}: no loginvault metric"
        unknown = sorted(name for name in used if not is_exported(name))
        assert not unknown, f"{where}: {unknown} are exported by no code"


# ---------------------------------------------------------------- scraping


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
