"""How `loginvault` logs: to stderr, as text or as one JSON object per line, at the chosen level."""

from __future__ import annotations

import json
import logging
import sys
import time

log = logging.getLogger("ingest")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    # Their DEBUG lines would drown ours (and could show request details).
    for noisy in ("botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def report(text: str, log_format: str) -> None:
    """A line for the user: on stderr as is, or, with JSON logs, as a log record."""
    if log_format == "json":
        log.info("%s", text)
    else:
        print(text, file=sys.stderr)


def report_error(message: str, log_format: str) -> None:
    """The one line of an error the user can fix."""
    if log_format == "json":
        log.error("error: %s", message)
    else:
        print(f"error: {message}", file=sys.stderr)
