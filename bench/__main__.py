"""`python -m bench` (`make bench`): every benchmark, each against its baseline measured in the
same run on this machine; prints the table and appends to bench/results.json."""

from __future__ import annotations

import argparse
import logging
import time

from bench import freshness, harness, land, memory, recovery, retention, rotate, rss, sqs_rate, transform
from bench import scale as scale_bench

ALL = ("land", "sqs", "freshness", "transform", "rotate", "retention", "scale", "memory", "rss", "recovery")
# Each profile: what the sizes are divided by, and the seconds the freshness producer sends.
# quick: a look in a fraction of the time; smoke: every benchmark end to end on tiny sizes, for
# CI (it fails when a benchmark crashes; its figures and ratios mean nothing).
PROFILES = {"full": (1, 120.0), "quick": (10, 30.0), "smoke": (100, 10.0)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="NAME",
        help=f"which to run (default all: {', '.join(ALL)}; transform includes incremental)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="profile",
        action="store_const",
        const="quick",
        help="10x smaller sizes: a look, not a measurement",
    )
    size.add_argument(
        "--smoke",
        dest="profile",
        action="store_const",
        const="smoke",
        help="100x smaller sizes, 10 s of freshness: does every benchmark still run (CI)",
    )
    parser.add_argument("--batch-size", type=int, default=50_000, help="ingest micro-batch size for land/memory")
    parser.add_argument("--receivers", type=int, default=4, help="receiver threads for the sqs benchmark")
    parser.add_argument("--workers", type=int, dest="receivers", help=argparse.SUPPRESS)  # its former name
    args = parser.parse_args()
    unknown = set(args.benchmarks) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}: choose from {', '.join(ALL)}")
    profile = args.profile or "full"
    scale, freshness_s = PROFILES[profile]
    logging.basicConfig(level=logging.WARNING)
    results: list[harness.Result] = []
    started = time.monotonic()
    with harness.cluster() as pg:
        dsn = pg.dsn()
        for name in args.benchmarks or ALL:
            t0 = time.monotonic()
            print(f"bench: {name} …", flush=True)
            harness.execute(dsn, "TRUNCATE raw.login_events, raw._dlt_loads")
            if name == "land":
                results += land.run(dsn, 1_000_000 // scale, 20_000 // scale, args.batch_size)
            elif name == "sqs":
                with harness.moto(fast_clock=True) as server:
                    results += sqs_rate.run(dsn, server.endpoint_url, 10_000 // scale, args.receivers)
            elif name == "freshness":
                with harness.moto(fast_clock=True) as server:
                    results += freshness.run(pg, server.endpoint_url, freshness_s)
            elif name == "transform":
                results += transform.run(dsn, 1_000_000 // scale, 10_000 // scale)
            elif name == "rotate":
                results += rotate.run(pg, 1_000_000 // scale)
            elif name == "retention":
                results += retention.run(pg, 1_000_000 // scale)
            elif name == "scale":  # 1,000,000 and 4,000,000 messages of history
                results += scale_bench.run(pg, 1_000_000 // scale, 10_000 // scale)
            elif name == "recovery":
                results += recovery.run(pg, 100_000 // scale, 1_000 // scale)
            elif name == "memory":
                results += memory.run(dsn, 100_000 // scale, 1_000_000 // scale, args.batch_size)
            elif name == "rss":  # the deployed command at its defaults: no --batch-size
                with harness.moto(fast_clock=True) as server:
                    results += rss.run(dsn, server.endpoint_url, 100_000 // scale)
                harness.execute(dsn, "TRUNCATE raw.login_events, raw._dlt_loads")
                with harness.moto(fast_clock=True) as server:
                    results += rss.large_bodies(dsn, server.endpoint_url, 1_000 // scale)
            print(f"bench: {name} took {time.monotonic() - t0:.0f} s", flush=True)
    harness.record(results, profile)
    print(f"bench: all done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
