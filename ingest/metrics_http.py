"""The small HTTP server behind every `--metrics-port` (the ingest's and the transform service's):
/metrics renders a Prometheus registry, /healthz asks a health function (readiness: it follows
SQS and the database), /livez answers while the process serves (liveness: an outage of SQS must
not restart every pod), on a thread of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ingest import LoginvaultError

# (healthy, reason): the reason is the 503's body, one line for whoever reads the probe's events.
HealthCheck = Callable[[], tuple[bool, str]]


class MetricsEndpoint:
    """/metrics and /healthz on host:port until the `with` block ends."""

    def __init__(self, registry: CollectorRegistry, health: HealthCheck, port: int, host: str = "0.0.0.0") -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.startswith("/metrics"):
                    self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path.startswith("/livez"):
                    self._reply(200, b"ok\n")
                elif self.path.startswith("/healthz"):
                    healthy, reason = health()
                    if healthy:
                        self._reply(200, b"ok\n")
                    else:
                        self._reply(503, f"{reason}\n".encode())
                else:
                    self._reply(404, b"not found: /metrics, /healthz or /livez\n")

            def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # scrapes are not worth a log line each
                pass

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:  # the port is taken, or the address is not this machine's
            reason = exc.strerror or str(exc)
            raise LoginvaultError(
                f"cannot serve metrics on {host}:{port}: {reason} (choose another --metrics-port or --metrics-host)"
            ) from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="metrics")

    def __enter__(self) -> MetricsEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
