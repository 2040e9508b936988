"""Reading a Prometheus endpoint in the tests: GET /metrics or /healthz, and one sample's value."""

from __future__ import annotations

import urllib.error
import urllib.request


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:port/path; (0, "") while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:  # not listening (yet)
        return 0, ""


def metric(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample of a /metrics text (labels as exposed: '{state="visible"}'), or None."""
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return None
