#!/usr/bin/env python3
"""The drift lifecycle's figures (issue 17), in one harness run:

1. `/api/episodes` page latency on a small history (10 targets, 1,000 snapshots) and on the big one
   (10,000 targets, --big snapshots, 10M by default), seeded alike by examples/seed_history.rs; the
   goal is a big/small p50 ratio of at most 1.3. With --long, the same again on histories whose
   SYNCED runs are 100 times longer (one check in 1,000 drifts), where an episode covers ~1,000
   snapshots: what an episode costs when its snapshots are many.
2. Ingest with the lifecycle machinery against the same ingest without it: --baseline names a
   release binary built from the commit before the lifecycle (865a225); runs alternate between the
   two binaries, each on a fresh database, so the machine's drift hits both alike. The goal is a
   slowdown of at most 5 %.

Run through bench/lifecycle.sh, which builds both binaries. Results: stdout and
target/bench/lifecycle.{json,md}.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the main harness: wrk, servers, seeding)

PAGES = {
    "one target": "/api/episodes?repo=repo-7&server=server-7&limit=100",
    "fleet": "/api/episodes?limit=100",
    "fleet, newest first": "/api/episodes?limit=100&order=desc",
    "open episodes": "/api/episodes?open=true&limit=100",
}


def server(binary, database):
    return run.Process(
        [str(binary), "--listen", "127.0.0.1:{port}", "--database-url", run.sqlite_url(database)],
        "/readyz",
        log=f"{database}.log",
    )


def episodes(args, started):
    histories = [("small", 10, 1_000, 10), ("big", 10_000, args.big, 10)]
    if args.long:
        histories += [("small, long runs", 10, 1_000, 1_000), ("big, long runs", 10_000, args.big, 1_000)]
    results = {}
    for index, (name, targets, snapshots, drift_every) in enumerate(histories):
        database = run.WORK / f"episodes-{index}.db"
        seeded = run.seed(run.sqlite_url(database), targets, snapshots) if drift_every == 10 else \
            seed(database, targets, snapshots, drift_every)
        run.progress(f"seeded {name}: {snapshots} snapshots in {seeded['seconds']} s", started)
        proc = server(run.BIN, database)
        pages = {}
        for label, path in PAGES.items():
            if args.pages and label not in args.pages:
                continue
            pages[label] = run.summarize(run.latency(proc.url(path), args.runs, "2s"))
            try:
                with run.urllib.request.urlopen(proc.url(path)) as response:
                    pages[label]["episodes"] = len(json.loads(response.read()))
            except run.urllib.error.HTTPError as error:
                run.PROBLEMS.append(f"{name}, {path}: {error.code} {error.read()[:500]!r}")
                pages[label]["episodes"] = None
            if pages[label]["non_2xx"]:
                run.PROBLEMS.append(f"{name}, {path}: {pages[label]['non_2xx']} non-2xx answers")
            run.progress(f"{name}, {label}: p50 {run.ms(pages[label]['p50_us'])}", started)
        proc.stop()
        run.keep_logs([Path(f"{database}.log")], f"episodes on the {name} history")
        results[name] = {"targets": targets, "snapshots": snapshots, "drift_every": drift_every,
                         "seed_seconds": seeded["seconds"], "pages": pages}
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    return results


def seed(database, targets, snapshots, drift_every):
    output = run.subprocess.run(
        [str(run.SEED), run.sqlite_url(database), str(targets), str(snapshots), str(drift_every)],
        cwd=run.WORK, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def ingest(args, started):
    rows = {"baseline": [], "lifecycle": []}
    for attempt in range(args.runs):
        for name, binary in (("baseline", args.baseline), ("lifecycle", run.BIN)):
            database = run.WORK / f"ingest-{name}-{attempt}.db"
            proc = server(binary, database)
            cpu_before = proc.cpu()
            result = run.wrk(proc.url(), "post.lua", 64, args.duration, 10_000)
            cpu = proc.cpu() - cpu_before
            proc.stop()
            stored = run.count_snapshots(database)
            run.check_stored(result, stored, f"{name} ingest run {attempt + 1}")
            result["cpu_us_per_snapshot"] = cpu * 1e6 / max(stored, 1)
            rows[name].append(result)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{database}{suffix}").unlink(missing_ok=True)
            run.progress(f"ingest {name} run {attempt + 1}: {result['rate']:.0f}/s, "
                         f"{result['cpu_us_per_snapshot']:.1f} µs per snapshot", started)
    return {name: {**run.summarize(runs), "rates": [round(r["rate"]) for r in runs]}
            for name, runs in rows.items()}


def render(results):
    lines = [f"Machine: {results['machine']}. Medians of {results['runs']} runs. "
             f"Load average {results['load_before'][0]:.2f} at the start, "
             f"{results['load_after'][0]:.2f} at the end.", ""]
    if run.PROBLEMS:
        lines += ["**Problems:**", ""] + [f"- {p}" for p in run.PROBLEMS] + [""]
    eps = results["episodes"]
    for small, big in (("small", "big"), ("small, long runs", "big, long runs")):
        if small not in eps:
            continue
        s, b = eps[small], eps[big]
        lines += [
            f"| /api/episodes page, p50 (1 connection) | {s['snapshots']:,} snapshots, "
            f"{s['targets']} targets | {b['snapshots']:,} snapshots, {b['targets']:,} targets "
            f"| ratio | goal |",
            "|---|---|---|---|---|",
        ]
        for label in PAGES:
            if label not in s["pages"] or label not in b["pages"]:
                continue
            sp, bp = s["pages"][label], b["pages"][label]
            lines.append(
                f"| {label} (one check in {s['drift_every']} drifts; {sp['episodes']} / "
                f"{bp['episodes']} episodes) | {run.ms(sp['p50_us'])} | {run.ms(bp['p50_us'])} "
                f"| **{bp['p50_us'] / sp['p50_us']:.2f}** | ≤ 1.30 |")
        lines.append("")
    if "ingest" in results:
        base, life = results["ingest"]["baseline"], results["ingest"]["lifecycle"]
        lines += [
            "| Ingest, 10,000 targets, c=64, random order | snapshots/s (runs) | p99 "
            "| server µs per snapshot |",
            "|---|---|---|---|",
            f"| without the lifecycle (865a225) | {base['rate']:.0f}/s {base['rates']} "
            f"| {run.ms(base['p99_us'])} | {base['cpu_us_per_snapshot']:.1f} |",
            f"| with it (this commit) | {life['rate']:.0f}/s {life['rates']} "
            f"| {run.ms(life['p99_us'])} | {life['cpu_us_per_snapshot']:.1f} |",
            "",
            f"Slowdown by the lifecycle machinery: **{(1 - life['rate'] / base['rate']) * 100:.1f} %** "
            f"of the rate, {(life['cpu_us_per_snapshot'] / base['cpu_us_per_snapshot'] - 1) * 100:.1f} % "
            f"more CPU per snapshot (goal: at most 5 % slower).",
        ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", default="4s", help="wrk duration of each ingest run")
    parser.add_argument("--big", type=int, default=10_000_000, help="snapshots in the big history")
    parser.add_argument("--long", action="store_true", help="also measure long SYNCED runs")
    parser.add_argument("--baseline", type=Path, help="release binary without the lifecycle")
    parser.add_argument("--no-episodes", action="store_true")
    parser.add_argument("--pages", nargs="+", choices=list(PAGES), metavar="PAGE",
                        help=f"measure only these pages (of: {', '.join(PAGES)})")
    args = parser.parse_args()
    if args.baseline:
        args.baseline = args.baseline.resolve()
    started = time.monotonic()
    results = {"machine": f"{os.cpu_count()} CPUs ({run.cpu_model()})", "runs": args.runs,
               "load_before": run.loadavg()}
    if args.baseline:
        results["ingest"] = ingest(args, started)
    if not args.no_episodes:
        results["episodes"] = episodes(args, started)
    else:
        results["episodes"] = {}
    results["load_after"] = run.loadavg()
    results["problems"] = run.PROBLEMS
    run.OUT.mkdir(parents=True, exist_ok=True)
    (run.OUT / "lifecycle.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (run.OUT / "lifecycle.md").write_text(table)
    print(table)
    sys.exit(1 if run.PROBLEMS else 0)


if __name__ == "__main__":
    run.WORK = Path(tempfile.mkdtemp(prefix="bench-lifecycle-", dir=os.environ.get("BENCH_DIR")))
    try:
        main()
    finally:
        shutil.rmtree(run.WORK, ignore_errors=True)
