"""`python -m ingest`: the command line of loginvault (stack, seed, run)."""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
import time
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


def _stop_on_signals(stop: threading.Event, doing: str) -> None:
    """SIGTERM and SIGINT set `stop`: the work in hand finishes, then the command ends."""

    def handler(signum, _frame):
        log.info("received %s: %s", signal.Signals(signum).name, doing)
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
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from ingest import stack

    stack.bootstrap(config.require("PG_DSN"))
    print("bootstrap: done", file=sys.stderr)
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from ingest import sample

    events = sample.file_events(Path(args.file)) if args.file else sample.synthetic_events(args.count, args.random_seed)
    sent = sample.send_events(config.SqsSettings.from_env(), events)
    print(f"seed: sent {sent} messages to {config.require('SQS_QUEUE_URL')}", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ingest.pipeline import Ingest, RawLoader, RunOptions
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
    queue = Queue(config.SqsSettings.from_env())
    queue.attributes()  # pre-flight: endpoint, queue and credentials
    dsn = config.role_dsn(config.LOADER_ROLE)
    loaders = [RawLoader(dsn, retry_budget_seconds=options.retry_budget_seconds) for _ in range(options.loaders)]
    try:
        loaders[0].check()
        ingest = Ingest(queue, loaders, options)
        _stop_on_signals(ingest.stopping, "finishing the batch in hand, releasing the rest")
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
    if result.direction == "token_to_value":
        if not result.found:
            print("recover: no such token in the vault (the lookup was audited)", file=sys.stderr)
            return 1
        print(f"{result.kind}\t{result.value}")
    else:
        print(f"{result.token}\t{result.logins}")
        print(
            f"recover: {result.kind} token carried by {result.logins} login(s); the lookup was audited", file=sys.stderr
        )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """What an analyst sees: mart size, rejections by reason, shared IPs/devices, sample rows."""
    import psycopg

    dsn = config.role_dsn(config.ANALYST_ROLE)
    mart = config.MART_SCHEMA
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            logins = conn.execute(f"SELECT count(*) FROM {mart}.user_logins").fetchone()[0]  # noqa: S608
            reasons = conn.execute(
                f"SELECT reason, count(*) FROM {mart}.rejected_login_events GROUP BY 1 ORDER BY 2 DESC, 1"  # noqa: S608
            ).fetchall()
            shared = {
                column: conn.execute(
                    f"SELECT count(*) FROM (SELECT {column} FROM {mart}.user_logins WHERE {column} IS NOT NULL"  # noqa: S608
                    f" GROUP BY 1 HAVING count(DISTINCT user_id) > 1) AS s"
                ).fetchone()[0]
                for column in ("masked_ip", "masked_device_id")
            }
            sample = conn.execute(
                f"SELECT user_id, device_type, left(masked_ip, 12) || '…', left(masked_device_id, 12) || '…',"  # noqa: S608
                f" locale, app_version, create_date FROM {mart}.user_logins ORDER BY message_id LIMIT 5"
            ).fetchall()
    except psycopg.OperationalError as exc:
        raise config.cannot_connect(dsn, exc) from None
    except psycopg.errors.UndefinedTable:
        raise LoginvaultError("the marts do not exist yet: run `make transform` first") from None
    print(f"user_logins: {logins} rows (as {config.ANALYST_ROLE})")
    print(f"rejected_login_events: {sum(n for _, n in reasons)} rows" + "".join(f"\n  {r}: {n}" for r, n in reasons))
    print(f"IPs shared by more than one user: {shared['masked_ip']}")
    print(f"devices shared by more than one user: {shared['masked_device_id']}")
    print("sample rows (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date):")
    for row in sample:
        print("  " + " | ".join("NULL" if v is None else str(v) for v in row))
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
    p.add_argument("action", choices=["up", "down", "status", "env"])
    p.add_argument(
        "--seed-if-new",
        type=int,
        default=0,
        metavar="N",
        help="with up: send N sample events if the queue was just created",
    )
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("bootstrap", help="run the idempotent bootstrap SQL as the admin PG_DSN")
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

    p = sub.add_parser("recover", help="as loginvault_pii_admin: token → value, or value → token (audited)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--token", help="print the kind and cleartext of this token")
    what.add_argument("--ip", help="print the token of this IP and how many logins carry it")
    what.add_argument("--device-id", help="print the token of this device id and how many logins carry it")
    p.add_argument("--reason", required=True, help="why (ticket, request): written to pii.recovery_audit")
    p.set_defaults(func=cmd_recover)

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
