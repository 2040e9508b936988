"""`python -m ingest`: the command line of loginvault (stack, seed, run)."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ingest import LoginvaultError, config

log = logging.getLogger("ingest")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {number}")
    return number


def _positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {value}")
    return number


def _stop_on_signals(stop: threading.Event, doing: str, held: Callable[[], int] | None = None) -> None:
    """SIGTERM and SIGINT set `stop`: the work in hand finishes, then the command ends. With
    `held` (how many messages the process holds), a second signal ends it at once (exit 130)."""
    signalled = threading.Event()

    def handler(signum, _frame):
        name = signal.Signals(signum).name
        if held is not None and signalled.is_set():
            log.warning("received %s again: exiting at once, %d messages left for redelivery", name, held())
            os._exit(130)  # no cleanup: a load in hand may never end, and SQS redelivers what is held
        signalled.set()
        log.info("received %s: %s%s", name, doing, "; a second signal exits at once" if held else "")
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_stack(args: argparse.Namespace) -> int:
    from ingest import stack

    if args.action == "up":
        stack.stack_up(seed_if_new=args.seed_if_new)
    elif args.action == "down":
        stack.stack_down()
    elif args.action == "status":
        for part, up in stack.stack_status().items():
            print(f"{part}: {'up' if up else 'down'}")
    elif args.action == "env":
        for name, value in stack.stack_env().items():
            print(f"export {name}={shlex.quote(value)}")
    elif args.action == "rotate-keys":
        from ingest import local_keys

        local_keys.rotate()
        _print_key_status()
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from ingest import bootstrap

    bootstrap.run_from_env()
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from ingest import sample

    events = sample.file_events(Path(args.file)) if args.file else sample.synthetic_events(args.count, args.random_seed)
    sent = sample.send_events(config.SqsSettings.from_env(), events)
    print(f"seed: sent {sent} messages to {config.require('SQS_QUEUE_URL')}", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ingest.consumer import Consumer, RunOptions
    from ingest.raw_loader import RawLoader
    from ingest.sqs import Queue

    options = RunOptions(
        follow=args.follow,
        max_messages=args.max_messages,
        batch_size=args.batch_size,
        batch_seconds=args.batch_seconds,
        wait_seconds=args.wait_time if args.wait_time is not None else (20 if args.follow else 3),
        workers=args.workers,
        loaders=args.loaders,
        visibility_timeout=args.visibility_timeout,
        retry_budget_seconds=args.retry_budget,
    )
    from ingest import db

    queue = Queue(config.SqsSettings.from_env())
    queue.attributes()  # pre-flight: endpoint, queue and credentials
    db.check_workload(config.LOADER_ROLE)  # pre-flight: the ingest's own login, no superuser
    dsn = config.role_dsn(config.LOADER_ROLE)
    loaders = [RawLoader(dsn, retry_budget_seconds=options.retry_budget_seconds) for _ in range(options.loaders)]
    try:
        loaders[0].check()
        ingest = Consumer(queue, loaders, options)
        _stop_on_signals(ingest.stopping, "finishing the batch in hand, releasing the rest", held=ingest.held)
        if args.metrics_port:
            from ingest.metrics import MetricsServer

            max_age = max(60.0, 3.0 * options.wait_seconds)
            with MetricsServer(ingest, args.metrics_port, args.metrics_host, max_poll_age=max_age):
                log.info("metrics on http://%s:%d/metrics, health on /healthz", args.metrics_host, args.metrics_port)
                stats = ingest.run()
        else:
            stats = ingest.run()
    finally:
        for loader in loaders:
            loader.close()
    if args.log_format == "json":
        log.info("ingest: %s", stats.line())
    else:
        print(f"ingest: {stats.line()}", file=sys.stderr)
    return 0


def cmd_transform(args: argparse.Namespace) -> int:
    """Run dbt in dbt_project/ as the transformer, keys in the session (default: `dbt build`);
    with --every, as a service: a build every S seconds in one process until SIGTERM/SIGINT."""
    from ingest import transform

    if args.every is None:
        if args.metrics_port:
            raise LoginvaultError("--metrics-port needs --every: a one-off build serves no metrics")
        return transform.run_once(args.dbt_args)
    stop = threading.Event()
    _stop_on_signals(stop, "finishing the build in hand")
    # The env default applies to the service only, so that one-off builds ignore a shared setting.
    port = args.metrics_port or config.env_int("TRANSFORM_METRICS_PORT", 0)
    if not port:
        return transform.run_every(args.every, args.dbt_args, stop, cycles=args.cycles)
    from ingest.transform_metrics import serving

    with serving(args.every, port, args.metrics_host) as metrics:
        return transform.run_every(args.every, args.dbt_args, stop, cycles=args.cycles, observer=metrics.observe)


def cmd_recover(args: argparse.Namespace) -> int:
    from ingest.recover import recover

    if args.token:
        result = recover(reason=args.reason, token=args.token)
    else:
        kind, value = ("ip", args.ip) if args.ip is not None else ("device_id", args.device_id)
        result = recover(reason=args.reason, value=value, kind=kind)
    refusals = {
        "over_budget": "this login's daily recovery budget is used up (the refusal was audited): an admin can raise it"
        " (docs/operations.md, Recover PII)",
        "decrypt_failed": "the vault entry cannot be decrypted with LOGINVAULT_ENCRYPTION_KEY: wrong key? (the failed"
        " lookup was audited)",
        "invalid": f"that is not a valid {(result.kind or '').replace('_', ' ')}, so no login can carry it (audited)",
        "wrong_key": "the keys in the environment are not the registered ones (the refusal was audited):"
        " `loginvault keys status` shows their fingerprints",
    }
    if result.outcome in refusals:
        raise LoginvaultError(refusals[result.outcome])
    if result.direction == "token_to_value":
        if not result.found:
            print("recover: no such token in the vault (the lookup was audited)", file=sys.stderr)
            return 1
        for kind, value in result.values:
            print(f"{kind}\t{value}")
        if result.outcome == "found_pre_rotation":
            print(
                f"recover: a token from before the last HMAC key rotation (it resolves until `keys retire hmac`);"
                f" its current token is {result.current_token}; the lookup was audited",
                file=sys.stderr,
            )
    else:
        print(f"{result.token}\t{result.logins}")
        print(
            f"recover: {result.kind} token carried by {result.logins} login(s); the lookup was audited", file=sys.stderr
        )
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Key versions: status, rotate hmac|encryption, retire hmac|encryption."""
    from ingest import keys, rotation

    if args.action == "rotate":
        if args.kind == keys.HMAC:
            rotated = rotation.rotate_hmac(args.batch or rotation.MAP_BATCH)
        else:
            rotated = rotation.rotate_encryption(args.batch or rotation.REWRAP_BATCH)
        print(
            rotated.line() if rotated else f"keys: the {args.kind} key is rotated already: nothing to do",
            file=sys.stderr,
        )
    elif args.action == "retire":
        retired = keys.retire(args.kind)
        print(f"keys: {args.kind} key version {retired.version} retired", file=sys.stderr)
    _print_key_status()
    return 0


def _print_key_status() -> None:
    from ingest import keys

    print("kind\tversion\tstate\tfingerprint\ttokens\tvault_rows\tmart_rows\tcreated_at\tactivated_at\tretired_at")
    for row in keys.status():
        v = row.version
        tokens = ("kind:value" if v.kind_separated else "value") if v.kind == keys.HMAC else ""
        cells = (v.kind, v.version, v.state, v.fingerprint, tokens, row.vault_rows, row.mart_rows, v.created_at,
                 v.activated_at, v.retired_at)  # fmt: skip
        print("\t".join("" if c is None else str(c) for c in cells))


def cmd_retention(args: argparse.Namespace) -> int:
    """Drop the raw and staged cleartext older than the window, never a day the marts lack."""
    from ingest import retention

    stop = threading.Event()
    if args.every:
        _stop_on_signals(stop, "finishing the retention run in hand")
    while True:
        try:
            report = retention.apply(args.days, dry_run=args.dry_run)
        except LoginvaultError as exc:
            if not args.every:
                raise
            log.error("retention: %s (next run in %.0f s)", exc, args.every)
        else:
            for line in report.lines():
                if args.log_format == "json" or args.every:
                    log.info(line)
                else:
                    print(line, file=sys.stderr)
        if not args.every or stop.wait(args.every):
            return 0


def cmd_raw(args: argparse.Namespace) -> int:
    """Convert an unpartitioned raw.login_events (an earlier version's) to day partitions."""
    from ingest import retention

    moved = retention.partition_raw(config.require("PG_DSN"))
    if moved < 0:
        print("raw: raw.login_events is partitioned already: nothing to do", file=sys.stderr)
    else:
        print(f"raw: raw.login_events partitioned by day, {moved} rows kept", file=sys.stderr)
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    """Erase a data subject from every layer (as a privacy officer; audited)."""
    from ingest import erase

    result = erase.erase(args.user_id, args.reason, dry_run=args.dry_run)
    print(result.line(args.dry_run), file=sys.stderr)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """The recovery audit, oldest first, tab-separated with a header (as an auditor)."""
    from ingest import audit

    since = audit.parse_since(args.since) if args.since else None
    print("\t".join(audit.COLUMNS))
    for row in audit.rows(since):
        print("\t".join("" if v is None else str(v) for v in row))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """What an analyst sees: mart size, rejections by reason, shared IPs/devices, sample rows."""
    from ingest.summary import summary

    for line in summary().lines():
        print(line)
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    """Report the dead-letter queue; with --redrive, move its messages back to the source queue."""
    from ingest import sqs

    settings = config.SqsSettings.from_env()
    if args.redrive:
        moved = sqs.dlq_redrive(settings, max_messages=args.max_messages)
        print(f"dlq: moved {moved} messages back to {settings.queue_url}", file=sys.stderr)
    else:
        report = sqs.dlq_report(settings)
        print(f"dlq: {report.url}: {report.visible} messages waiting, {report.in_flight} in flight", file=sys.stderr)
        for message_id, receive_count, sent_at in report.sample:
            print(f"{message_id}\treceived {receive_count} times\tsent {sent_at:%Y-%m-%dT%H:%M:%SZ}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ingest", description="loginvault: SQS login events → PostgreSQL, PII masked."
    )
    parser.add_argument(
        "--log-level",
        default=config.env("LOGINVAULT_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (env LOGINVAULT_LOG_LEVEL)",
    )
    parser.add_argument(
        "--log-format",
        default=config.env("LOGINVAULT_LOG_FORMAT", "text"),
        choices=["text", "json"],
        help="text, or one JSON object per line for log shippers (env LOGINVAULT_LOG_FORMAT)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("stack", help="the local PostgreSQL + moto SQS stack")
    p.add_argument("action", choices=["up", "down", "status", "env", "rotate-keys"])
    p.add_argument(
        "--seed-if-new",
        type=int,
        default=0,
        metavar="N",
        help="with up: send N sample events if the queue was just created",
    )
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser(
        "bootstrap",
        help="as the admin PG_DSN: the idempotent bootstrap SQL, and a login for each LOGINVAULT_<ROLE>_DSN set",
    )
    p.set_defaults(func=cmd_bootstrap)

    p = sub.add_parser("seed", help="send sample login events to SQS_QUEUE_URL")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--count", type=_positive, default=100, help="synthetic events to send (default 100)")
    group.add_argument(
        "--file", help="send the events of a JSON array / JSON Lines file (.gz ok); string elements are sent as-is"
    )
    p.add_argument("--random-seed", type=int, default=42, help="seed of the synthetic generator (default 42)")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("run", help="ingest SQS_QUEUE_URL into raw.login_events (drains, then exits)")
    p.add_argument("--follow", action="store_true", help="keep polling until SIGINT/SIGTERM")
    p.add_argument("--max-messages", type=_positive, metavar="N", help="stop after receiving N messages")
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=config.env_int("INGEST_BATCH_SIZE", 1000),
        help="messages per load (micro-batch), default 1000 (env INGEST_BATCH_SIZE)",
    )
    p.add_argument(
        "--batch-seconds",
        type=float,
        default=float(config.env("INGEST_BATCH_SECONDS", "1")),
        metavar="S",
        help="the longest a batch waits to fill before it is loaded (default 1, env INGEST_BATCH_SECONDS)",
    )
    p.add_argument(
        "--wait-time",
        type=int,
        default=None,
        choices=range(0, 21),
        metavar="S",
        help="long-poll seconds (default 3, with --follow 20); without --follow the run ends after an empty poll",
    )
    # Also accepted after `run`, where deployments put it (the default stays the global one).
    p.add_argument("--log-format", choices=["text", "json"], default=argparse.SUPPRESS, help="as before the command")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=config.env_int("INGEST_METRICS_PORT", 0),
        metavar="P",
        help="serve Prometheus /metrics and /healthz on this port (default off, env INGEST_METRICS_PORT)",
    )
    p.add_argument(
        "--metrics-host",
        default=config.env("INGEST_METRICS_HOST", "0.0.0.0"),
        metavar="ADDR",
        help="address to serve metrics on (default 0.0.0.0, env INGEST_METRICS_HOST)",
    )
    p.add_argument(
        "--loaders",
        type=_positive,
        default=config.env_int("INGEST_LOADERS", 2),
        metavar="N",
        help="batches loading at once, each by its own dlt pipeline (default 2, env INGEST_LOADERS)",
    )
    p.add_argument(
        "--workers",
        type=_positive,
        default=config.env_int("INGEST_WORKERS", 1),
        metavar="N",
        help="receiver threads long-polling in parallel, sharing one client (default 1, env INGEST_WORKERS)",
    )
    p.add_argument(
        "--visibility-timeout",
        type=_positive,
        default=config.env_int("SQS_VISIBILITY_TIMEOUT", config.DEFAULT_VISIBILITY_TIMEOUT),
        metavar="S",
        help="receive visibility timeout, well above a batch's load time (default 300, env SQS_VISIBILITY_TIMEOUT)",
    )
    p.add_argument(
        "--retry-budget",
        type=float,
        default=float(config.env_int("INGEST_RETRY_BUDGET", 60)),
        metavar="S",
        help="seconds to keep retrying a failing load before exiting non-zero (default 60, env INGEST_RETRY_BUDGET)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("dlq", help="report the dead-letter queue of SQS_QUEUE_URL; --redrive moves its messages back")
    p.add_argument("--redrive", action="store_true", help="move the DLQ's messages back to the source queue")
    p.add_argument("--max-messages", type=_positive, metavar="N", help="with --redrive: move at most N")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser(
        "recover", help="as a privacy officer (loginvault_pii_admin): token → value, or value → token (audited)"
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--token", help="print the kind and cleartext of this token")
    what.add_argument("--ip", help="print the token of this IP and how many logins carry it")
    what.add_argument("--device-id", help="print the token of this device id and how many logins carry it")
    p.add_argument("--reason", required=True, help="why (ticket, request): written to pii.recovery_audit")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("keys", help="PII key versions, as dbt's login: status; rotate or retire a key")
    p.add_argument("action", choices=["status", "rotate", "retire"])
    p.add_argument(
        "kind",
        nargs="?",
        choices=["hmac", "encryption"],
        help="with rotate: from LOGINVAULT_<KIND>_KEY_PREVIOUS (the active key) to LOGINVAULT_<KIND>_KEY;"
        " with retire: the previous version (old tokens stop resolving / the old key is no longer needed)",
    )
    p.add_argument(
        "--batch",
        type=_positive,
        metavar="N",
        help="with rotate: vault rows per committed batch (default 50,000 for hmac, 20,000 for encryption)",
    )
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("retention", help="as dbt's login: drop raw and staged cleartext older than the window")
    p.add_argument("action", choices=["apply"])
    p.add_argument(
        "--days",
        type=_positive,
        metavar="N",
        help="the window in days (default LOGINVAULT_RAW_RETENTION_DAYS, else 7): whole UTC days received before it go",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    p.add_argument(
        "--every",
        type=_positive_seconds,
        metavar="S",
        help="run as a service: apply every S seconds until SIGTERM/SIGINT (docker compose; Kubernetes uses a CronJob)",
    )
    p.set_defaults(func=cmd_retention)

    p = sub.add_parser("raw", help="as the admin PG_DSN: convert an unpartitioned raw.login_events to day partitions")
    p.add_argument("action", choices=["partition"])
    p.set_defaults(func=cmd_raw)

    p = sub.add_parser("erase", help="as a privacy officer (loginvault_pii_admin): erase a data subject (audited)")
    p.add_argument("--user-id", required=True, help="the subject's user_id, exactly as sent")
    p.add_argument("--reason", required=True, help="why (request id): written to pii.erasure_audit")
    p.add_argument("--dry-run", action="store_true", help="print the counts only (the lookup is audited)")
    p.set_defaults(func=cmd_erase)

    p = sub.add_parser("audit", help="as an auditor (loginvault_auditor): print the recovery audit")
    p.add_argument("--since", metavar="WHEN", help="only rows since WHEN: 7d, 12h, 30m, or a date/time (UTC)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("summary", help="print what an analyst sees in the marts (as loginvault_analyst)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("transform", help="run dbt in dbt_project/ as loginvault_transformer (default: dbt build)")
    p.add_argument(
        "--every",
        type=_positive_seconds,
        metavar="S",
        help="run as a service: the dbt command every S seconds (start to start) in one process, parsing the"
        " project once; unit tests in the first build only; SIGTERM/SIGINT finish the build in hand",
    )
    p.add_argument("--cycles", type=_positive, metavar="N", help="with --every: stop after N builds")
    p.add_argument(
        "--metrics-port",
        type=_positive,
        metavar="P",
        help="with --every: serve Prometheus /metrics and /healthz on this port (default off, env"
        " TRANSFORM_METRICS_PORT)",
    )
    p.add_argument(
        "--metrics-host",
        default=config.env("TRANSFORM_METRICS_HOST", "0.0.0.0"),
        metavar="ADDR",
        help="address to serve metrics on (default 0.0.0.0, env TRANSFORM_METRICS_HOST)",
    )
    p.add_argument("dbt_args", nargs=argparse.REMAINDER, help="dbt command and flags, e.g. `build --warn-error`")
    p.set_defaults(func=cmd_transform)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    for noisy in ("botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        if getattr(args, "action", None) in ("rotate", "retire") and args.kind is None:
            parser.error(f"keys {args.action} needs a kind: hmac or encryption")
        return args.func(args)
    except LoginvaultError as exc:
        if args.log_format == "json":
            log.error("error: %s", exc)
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
