"""Memory of the ingest as deployed: the peak RSS of a real `loginvault run --follow
--metrics-port P --log-format json` (deploy/k8s/deployment-ingest.yaml's arguments, every other
setting at its default) landing N messages from a moto queue, a producer process keeping the
visible backlog at 200 (moto's receive and send scan every message of the queue, several times
per message: each message costs it O(depth), so a deeper queue would measure moto), moto's clock
sped up (harness.FAST_CLOCK). At the rates moto allows even so, batches stay below the default
1000 messages: the figures report their mean size.

The figure is the process's own peak RSS (VmHWM, read once N rows are in raw, before its SIGTERM);
the RSS sampled at every tenth of N shows whether it levels off. It sizes the Deployment:
request = the peak rounded up to 32 MiB, limit = 2 x the peak rounded up to 32 MiB. The target
checks that the manifest still leaves that headroom.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import yaml

from bench import harness
from bench.harness import Result, execute
from bench.sqs_rate import BACKLOG, Producer
from ingest import config
from ingest.consumer import sqs
from ingest.consumer.sqs import Queue
from ingest.local.network import free_port
from ingest.settings import SqsSettings

DEPLOYMENT = config.REPO_ROOT / "deploy" / "k8s" / "deployment-ingest.yaml"
UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}


def round_up(mib: float, step: int = 32) -> int:
    return step * math.ceil(mib / step)


def manifest_memory() -> dict[str, int]:
    """The ingest container's memory request and limit in MiB."""
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    resources = container["resources"]
    return {
        kind: round(float(resources[kind]["memory"][:-2]) * UNITS[resources[kind]["memory"][-2:]])
        for kind in ("requests", "limits")
    }


def tree_rss_kib(pid: int) -> int:
    """RSS of the process and its descendants now (0 once it is gone)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


def high_water_kib(pid: int) -> int:
    """The process's peak RSS so far (VmHWM: its own address space's, since its exec). Not
    wait4's ru_maxrss: Linux carries over into it the RSS of the forked copy of this process
    before the exec, gigabytes after the memory benchmark ran in it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    except (OSError, StopIteration):
        return 0


def peak_rss(dsn: str, endpoint_url: str, n: int) -> dict:
    region = SqsSettings(None).region
    url, _ = sqs.ensure_queues(endpoint_url, region, name=f"bench-rss-{uuid.uuid4().hex[:6]}")
    producer = Producer(Queue(SqsSettings(url, endpoint_url, region)), n, backlog=BACKLOG)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "SQS_", "INGEST_", "LOGINVAULT_"))},
        "LOGINVAULT_LOADER_DSN": harness.role_dsn(dsn, config.LOADER_ROLE),  # the ingest's own login
        "SQS_QUEUE_URL": url,
        "SQS_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": region,
    }
    port = free_port()
    args = ["--log-format", "json", "run", "--follow", "--metrics-port", str(port)]
    with tempfile.TemporaryFile() as log:
        started = time.monotonic()
        producer.start()
        proc = subprocess.Popen([sys.executable, "-m", "ingest", *args], env=env, stdout=log, stderr=log)
        tree_peak, by_landed, step = 0, {}, max(1, n // 10)
        # Deliveries, redeliveries included (moto redelivers some; each is a load like any other).
        while (landed_rows := execute(dsn, "SELECT count(*) FROM raw.login_events")[0][0]) < n:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the ingest exited ({proc.returncode}):\n{log.read().decode()[-3000:]}")
            rss = tree_rss_kib(proc.pid)
            tree_peak = max(tree_peak, rss)
            by_landed.setdefault(landed_rows // step * step, rss)  # does it level off, or grow?
            time.sleep(0.5)
        seconds = time.monotonic() - started
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        landed, loads, redelivered = (
            float(re.search(rf"^{name} (\S+)$", text, re.M)[1])
            for name in (
                "loginvault_messages_landed_total",
                "loginvault_batch_load_seconds_count",
                "loginvault_messages_redelivered_total",
            )
        )
        peak = high_water_kib(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, status, _ = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Redelivered messages count as landed rows: the producer may not have sent its last ones.
        backlog = producer.join(timeout=5)
        if proc.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"the ingest exited {proc.returncode} at SIGTERM:\n{log.read().decode()[-3000:]}")
    return {
        "peak_kib": peak,
        "tree_peak_kib": tree_peak,
        "seconds": seconds,
        "mean_visible_backlog": backlog,
        "mean_batch": landed / max(1.0, loads),
        "redelivered": redelivered,
        "rss_kib_by_landed": by_landed,
    }


def run(dsn: str, endpoint_url: str, n: int) -> list[Result]:
    measured = peak_rss(dsn, endpoint_url, n)
    peak_mib = measured["peak_kib"] / 1024
    manifest = manifest_memory()
    ratio = peak_mib / manifest["limits"]
    figures = {
        "messages": n,
        "args": "run --follow --metrics-port P --log-format json (defaults otherwise)",
        "peak_rss_mib": round(peak_mib, 1),
        "sampled_tree_peak_mib": round(measured["tree_peak_kib"] / 1024, 1),
        "msgs_per_s": round(n / measured["seconds"]),
        "mean_visible_backlog": round(measured["mean_visible_backlog"]),
        "mean_batch_messages": round(measured["mean_batch"]),
        "redelivered": round(measured["redelivered"]),
        "rss_mib_by_landed": {k: round(v / 1024) for k, v in sorted(measured["rss_kib_by_landed"].items())},
        "rule_request_mib": round_up(peak_mib),
        "rule_limit_mib": round_up(2 * peak_mib),
        "manifest_request_mib": manifest["requests"],
        "manifest_limit_mib": manifest["limits"],
    }
    return [Result("rss", ratio, "peak <= 0.5 x the Deployment's limit", ratio <= 0.5, figures)]


# ---------------------------------------------------------------- large bodies

LARGE_BODY_BYTES = 1024 * 1024 - 1024  # SQS's largest body (1 MiB), less room for the JSON around it


def large_bodies(dsn: str, endpoint_url: str, n: int, extra_env: dict[str, str] | None = None) -> list[Result]:
    """N bodies of 1 MiB (a valid login event with a 1 MiB device id), all queued before the
    ingest starts, landed by `loginvault run --follow` at its defaults: its peak RSS against the
    Deployment's limit (the byte bound of a batch, --batch-bytes, is what holds it)."""
    region = SqsSettings(None).region
    url, _ = sqs.ensure_queues(endpoint_url, region, name=f"bench-large-{uuid.uuid4().hex[:6]}")
    queue = Queue(SqsSettings(url, endpoint_url, region))
    filler = "d" * (LARGE_BODY_BYTES - 64)
    for i in range(n):
        queue.client.send_message(QueueUrl=url, MessageBody=f'{{"user_id": "large-{i}", "device_id": "{filler}"}}')
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "SQS_", "INGEST_", "LOGINVAULT_"))},
        "LOGINVAULT_LOADER_DSN": harness.role_dsn(dsn, config.LOADER_ROLE),
        "SQS_QUEUE_URL": url,
        "SQS_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": region,
        **(extra_env or {}),
    }
    with tempfile.TemporaryFile() as log:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "ingest", "run", "--follow"], env=env, stdout=log, stderr=log)
        while execute(dsn, "SELECT count(DISTINCT message_id) FROM raw.login_events")[0][0] < n:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the ingest exited ({proc.returncode}):\n{log.read().decode()[-3000:]}")
            time.sleep(0.5)
        seconds = time.monotonic() - started
        peak_mib = high_water_kib(proc.pid) / 1024
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    limit = manifest_memory()["limits"]
    figures = {
        "messages": n,
        "body_bytes": LARGE_BODY_BYTES,
        "peak_rss_mib": round(peak_mib, 1),
        "manifest_limit_mib": limit,
        "seconds": round(seconds, 1),
    }
    return [Result("rss_large_bodies", peak_mib / limit, "peak < the Deployment's limit", peak_mib < limit, figures)]
