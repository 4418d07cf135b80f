#!/usr/bin/env python3
"""Kill loop (issue 13 "done when"; reliability.md RES-01, CON-02): N random SIGKILLs of the main
process alone, of one download worker alone and of the whole process group (default N = 20 of
each, shuffled), each followed by a re-run of the same `datakit scrape --provider urls` with two
workers against a loopback server; then one run that finishes. Prints the figures:

* every URL in the final manifest + failures exactly once; `datakit verify` clean;
* GETs of URLs already settled when their run started (must be 0), and of URLs re-fetched
  because they were in flight at a kill (allowed);
* processes of an earlier run alive when the next run started (must be 0; the next run starts
  as soon as they are gone, at most 2 s after the main process exited), the slowest time from
  the main process's exit until every process of its run was gone, and from a worker's kill
  until the main process had stopped the other worker and exited;
* the peak number of concurrent requests at the host against `fetch.per_host`.

    python3 bench/kill_loop.py                     # 20 x 3 kills, 2,000 URLs
    python3 bench/kill_loop.py --kills 3 --urls 400 --json bench-out/kill_loop.json

Linux only (process trees from /proc). Everything stays on 127.0.0.1. The engine is
tests/fixtures/kill_loop.py, which the suite also runs with 3 kills of each kind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, ensure_venv  # noqa: E402


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20, help="kills of each kind (main, worker, group); default 20")
    ap.add_argument("--urls", type=int, default=2000, help="URLs in the scrape (1 in 25 answers 404); default 2000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="folder to run in (default: a temp folder, removed)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("kill_loop.py reads process trees from /proc: Linux only", file=sys.stderr)
        return 2
    code = ensure_venv(("datakit.scrape", "aiohttp", "pandas"), __file__, argv)
    if code is not None:
        return code
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    from tests.fixtures.kill_loop import kill_loop
    from tests.fixtures.servers import serve

    with serve() as server, tempfile.TemporaryDirectory() as tmp:
        work = args.work.resolve() if args.work else Path(tmp)
        print(f"kill loop: {args.kills} kills of each kind (main, worker, group), {args.urls} URLs, seed {args.seed}, "
              f"{len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}", flush=True)
        fig = kill_loop(work / "kill-loop", server, kills_per_mode=args.kills, n_urls=args.urls, seed=args.seed,
                        log=sys.stdout)
    d = fig.as_dict()
    print()
    rows = [
        ("kills (main / worker / group)", f"{fig.kills['main']} / {fig.kills['worker']} / {fig.kills['group']}"),
        ("runs (kills + final)", fig.runs),
        ("exit codes", ", ".join(f"{k}: {v}" for k, v in sorted(fig.exit_codes.items()))),
        ("final run exit", fig.final_exit),
        ("URLs / stored + failures", f"{fig.urls} / {fig.stored} + {fig.failed} = {fig.stored + fig.failed}"),
        ("URLs missing / repeated / unknown", f"{fig.missing_urls} / {fig.repeated_urls} / {fig.unknown_urls}"),
        ("datakit verify", "clean" if not fig.verify_problems else f"{len(fig.verify_problems)} problem(s)"),
        ("GETs in all", fig.gets),
        ("duplicate GETs of settled URLs", fig.duplicate_gets_of_settled),
        ("re-fetched (in flight at a kill)", fig.refetched_unsettled),
        ("earlier-run processes alive at next start", fig.alive_at_next_start),
        ("slowest main exit -> run's processes all gone", f"{fig.slowest_exit_s:.2f} s"),
        ("slowest worker kill -> main stopped the rest", f"{fig.slowest_stop_s:.2f} s"),
        ("peak requests at the host / per_host", f"{fig.peak_per_host} / {fig.per_host}"),
        ("wall time", f"{fig.seconds:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    for p in fig.verify_problems[:10]:
        print(f"  verify: {p}")
    print(f"\n{'PASS' if fig.ok else 'FAIL'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(d, indent=1))
    return 0 if fig.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
