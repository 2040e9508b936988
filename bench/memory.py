"""Memory: peak RSS of the ingest landing 100k vs 1M messages from the in-process source, each
in a process of its own. Streaming means the larger run needs hardly more memory."""

from __future__ import annotations

import resource
import subprocess
import sys

from bench.harness import Result, execute


def peak_rss_kib(dsn: str, n: int, batch_size: int) -> int:
    execute(dsn, "TRUNCATE raw.login_events")
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", dsn, str(n), str(batch_size)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


def run(dsn: str, small: int, large: int, batch_size: int) -> list[Result]:
    small_kib, large_kib = peak_rss_kib(dsn, small, batch_size), peak_rss_kib(dsn, large, batch_size)
    ratio = large_kib / small_kib
    figures = {
        "small": small,
        "large": large,
        "batch_size": batch_size,
        "small_peak_mib": round(small_kib / 1024),
        "large_peak_mib": round(large_kib / 1024),
    }
    return [Result("memory", ratio, f"{large // 1000}k peak <= 1.2 x {small // 1000}k peak", ratio <= 1.2, figures)]


if __name__ == "__main__":  # the child: land N generated messages, print the peak RSS in KiB
    from bench.land import land
    from ingest.local import sample

    dsn, n, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    bodies = (sample.to_body(e) for e in sample.synthetic_events(n, seed=19))  # generated on demand
    landed, _ = land(dsn, bodies, batch_size)
    assert landed == n, landed
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
