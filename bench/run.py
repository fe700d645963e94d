#!/usr/bin/env python3
"""Measures gitops-status-server and Prometheus Pushgateway side by side on this machine.

Run through bench/run.sh, which installs wrk and Pushgateway and builds the binaries. Every figure
is the median of RUNS runs (default 3); each ingest run starts from an empty database (or a fresh
Pushgateway). Output: a Markdown table on stdout, and target/bench/results.{json,md}.
"""

import argparse
import functools
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/gitops-status-server"
SEED = ROOT / "target/release/examples/seed_history"
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Process:
    """A server under test on a free port; stopped with SIGTERM."""

    def __init__(self, argv, ready_path, env=None):
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            cwd=WORK,
            env={**os.environ, "RUST_LOG": "warn", **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_ready(self.url(ready_path))
        self.ready_seconds = time.monotonic() - self.started

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    def rss(self):
        return proc_status(self.proc.pid, "VmRSS")

    def peak_rss(self):
        return proc_status(self.proc.pid, "VmHWM")

    def cpu(self):
        return proc_cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def server(database):
    return Process(
        [str(BIN), "--listen", "127.0.0.1:{port}", "--database-url", f"sqlite://{database}"],
        "/readyz",
    )


def pushgateway(state, consistency_check=True):
    """A Pushgateway persisting to `state` (Debian's default persists to /var/lib, which would leak
    one run's groups into the next)."""
    argv = [
        PUSHGATEWAY, "--web.listen-address=127.0.0.1:{port}", "--log.level=error",
        f"--persistence.file={state}",
    ]
    if not consistency_check:
        argv.append("--push.disable-consistency-check")
    return Process(argv, "/-/ready")


def groups(proc):
    with urllib.request.urlopen(proc.url("/metrics")) as response:
        return sum(1 for line in response.read().decode().splitlines()
                   if line.startswith("gitops_sync_status{"))


@functools.lru_cache(maxsize=None)
def primed_pushgateway_state(targets):
    """A persistence file holding `targets` groups, as a Pushgateway serving a fleet of that size
    holds them. Pushed with the consistency check off, which is ~1000x faster; the check only
    changes how pushes are accepted, not what is stored."""
    state = WORK / f"pushgateway-{targets}.data"
    proc = pushgateway(state, consistency_check=False)
    while groups(proc) < targets:
        wrk(proc.url(), "push.lua", 16, "1s", targets)
    proc.stop()
    return state


def wrk(url, script, connections, duration, targets=0, threads=2):
    """Runs wrk; returns its RESULT line plus the generator's own CPU time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(
        [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}", "--timeout", "30s",
            "-s", str(ROOT / "bench" / script), url,
        ],
        env={**os.environ, "TARGETS": str(targets), "WRK_THREADS": str(threads)},
        capture_output=True, text=True, check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(l for l in output.splitlines() if l.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    seconds = result["duration_us"] / 1e6
    result["rate"] = result["requests"] / seconds
    result["generator_cpu"] = (
        (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ) / seconds
    return result


def median(values):
    return statistics.median(values)


def summarize(runs, keys=("rate", "p50_us", "p99_us", "generator_cpu", "server_cpu", "non_2xx")):
    return {key: median([run[key] for run in runs]) for key in keys if key in runs[0]}


def seed(database, targets, snapshots):
    output = subprocess.run(
        [str(SEED), f"sqlite://{database}", str(targets), str(snapshots)],
        cwd=WORK, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def ingest_ours(targets, connections, runs, duration):
    results = []
    for run in range(runs):
        database = WORK / f"ingest-{targets}-{connections}-{run}.db"
        proc = server(database)
        idle_rss = proc.rss()
        cpu_before = proc.cpu()
        result = wrk(proc.url(), "post.lua", connections, duration, targets)
        result["server_cpu"] = (proc.cpu() - cpu_before) / (result["duration_us"] / 1e6)
        result["idle_rss"] = idle_rss
        result["peak_rss"] = proc.peak_rss()
        proc.stop()
        stored = count_snapshots(database)
        if stored < result["requests"] - result["non_2xx"] - result["socket_errors"]:
            raise RuntimeError(f"{stored} snapshots stored for {result['requests']} requests")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        results.append(result)
    return results


def count_snapshots(database):
    import sqlite3

    with sqlite3.connect(database) as db:
        return db.execute("select count(*) from snapshots").fetchone()[0]


def ingest_pushgateway(targets, connections, runs, duration, consistency_check=True):
    """Pushes to a Pushgateway that already holds `targets` groups (a fleet in steady state)."""
    primed = primed_pushgateway_state(targets)
    results = []
    for run in range(runs):
        state = WORK / f"pushgateway-run-{run}.data"
        shutil.copyfile(primed, state)
        proc = pushgateway(state, consistency_check)
        if groups(proc) < targets:
            raise RuntimeError("the primed Pushgateway state did not load")
        cpu_before = proc.cpu()
        result = wrk(proc.url(), "push.lua", connections, duration, targets)
        result["server_cpu"] = (proc.cpu() - cpu_before) / (result["duration_us"] / 1e6)
        result["peak_rss"] = proc.peak_rss()
        proc.stop()
        results.append(result)
    return results


def latency(url, runs, duration):
    return [wrk(url, "get.lua", 1, duration, threads=1) for _ in range(runs)]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", default="3s", help="wrk duration of each ingest run")
    parser.add_argument("--big", type=int, default=10_000_000, help="snapshots in the big history")
    parser.add_argument("--quick", action="store_true", help="1 run, 2 s, 1M-snapshot history")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration, args.big = 1, "2s", 1_000_000

    started = time.monotonic()
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "cpu_model": cpu_model(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
        "runs": args.runs,
        "duration": args.duration,
        "binary_bytes": BIN.stat().st_size,
    }

    # Ingest, side by side.
    ingest = {}
    for targets in (1_000, 10_000):
        for connections in (16, 64):
            key = f"{targets}/{connections}"
            ours = ingest_ours(targets, connections, args.runs, args.duration)
            theirs = ingest_pushgateway(targets, connections, args.runs, args.duration)
            ingest[key] = {
                "ours": summarize(ours),
                "pushgateway": summarize(theirs),
                "ours_idle_rss": median([r["idle_rss"] for r in ours]),
                "ours_peak_rss": median([r["peak_rss"] for r in ours]),
                "pushgateway_peak_rss": median([r["peak_rss"] for r in theirs]),
            }
            progress(f"ingest {key}: {ingest[key]['ours']['rate']:.0f}/s vs "
                     f"{ingest[key]['pushgateway']['rate']:.0f}/s", started)
    unchecked = ingest_pushgateway(10_000, 64, args.runs, args.duration, consistency_check=False)
    results["ingest"] = ingest
    results["pushgateway_unchecked_10000_64"] = summarize(unchecked)

    # Histories to read from: 10,000 targets with one check each, and with --big checks in all;
    # 1,000 checks of 10 targets for the small end of the history page.
    small = WORK / "small.db"
    tiny = WORK / "tiny.db"
    big = WORK / "big.db"
    seed(small, 10_000, 10_000)
    seed(tiny, 10, 1_000)
    seeded = seed(big, 10_000, args.big)
    results["seed_big"] = seeded
    progress(f"seeded {args.big} snapshots in {seeded['seconds']} s", started)
    results["bytes_per_snapshot"] = seeded["bytes_per_snapshot"]

    history_page = "/history?repo=repo-7&server=server-7&limit=100"
    reads = {}
    for name, database in (("small", small), ("tiny", tiny), ("big", big)):
        readies = []
        for _ in range(args.runs):
            proc = server(database)
            readies.append(proc.ready_seconds)
            proc.stop()
        proc = server(database)
        reads[name] = {
            "ready_seconds": median(readies),
            "idle_rss": proc.rss(),
            "history_page": summarize(latency(proc.url(history_page), args.runs, "2s")),
        }
        if name != "tiny":
            reads[name]["status_json"] = summarize(latency(proc.url("/status.json"), args.runs, "2s"))
            with urllib.request.urlopen(proc.url("/status.json")) as response:
                body = response.read()
            reads[name]["status_json_targets"] = len(json.loads(body))
            reads[name]["status_json_bytes"] = len(body)
        proc.stop()
    results["reads"] = reads

    # Pushgateway's /metrics with 10,000 groups.
    proc = pushgateway(primed_pushgateway_state(10_000))
    results["pushgateway_metrics_groups"] = groups(proc)
    results["pushgateway_metrics"] = summarize(latency(proc.url("/metrics"), args.runs, "3s"))
    proc.stop()

    results["seconds"] = round(time.monotonic() - started, 1)
    out = ROOT / "target/bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (out / "results.md").write_text(table)
    print(table)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def progress(message, started):
    print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)


def ms(us):
    return f"{us / 1000:.2f} ms"


def mb(b):
    return f"{b / 2**20:.1f} MiB"


def render(r):
    big_rows = f"{r['seed_big']['snapshots']:,}-snapshot"
    lines = [
        f"Machine: {r['machine']['cpus']} CPUs ({r['machine']['cpu_model']}), "
        f"{r['machine']['memory_gib']} GiB, Linux {r['machine']['kernel']}. "
        f"Medians of {r['runs']} runs; ingest runs last {r['duration']}; load generator on the same machine.",
        "",
        "| Ingest (targets / connections) | gitops-status-server (durable) | p50 / p99 | wrk CPU | server CPU "
        "| Pushgateway 1.5.1 | p50 / p99 | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, row in r["ingest"].items():
        ours, theirs = row["ours"], row["pushgateway"]
        lines.append(
            f"| {key} | {ours['rate']:.0f}/s | {ms(ours['p50_us'])} / {ms(ours['p99_us'])} "
            f"| {ours['generator_cpu']:.2f} cores | {ours['server_cpu']:.2f} cores "
            f"| {theirs['rate']:.1f}/s | {ms(theirs['p50_us'])} / {ms(theirs['p99_us'])} "
            f"| {ours['rate'] / max(theirs['rate'], 1e-9):.0f}x |"
        )
    unchecked = r["pushgateway_unchecked_10000_64"]
    lines += [
        "",
        f"Pushgateway with `--push.disable-consistency-check`, 10000 / 64: {unchecked['rate']:.0f}/s, "
        f"p50 {ms(unchecked['p50_us'])}, p99 {ms(unchecked['p99_us'])}.",
        "",
        f"| Read (1 connection) | small history | {big_rows} history | ratio |",
        "|---|---|---|---|",
    ]
    small, big, tiny = r["reads"]["small"], r["reads"]["big"], r["reads"]["tiny"]
    lines.append(
        f"| /status.json, {small['status_json_targets']} targets ({mb(small['status_json_bytes'])}), p50 "
        f"| {ms(small['status_json']['p50_us'])} "
        f"| {ms(big['status_json']['p50_us'])} | {big['status_json']['p50_us'] / small['status_json']['p50_us']:.2f} |"
    )
    lines.append(
        f"| /history page (limit 100, one target), p50 | {ms(tiny['history_page']['p50_us'])} (1,000 rows) "
        f"| {ms(big['history_page']['p50_us'])} | {big['history_page']['p50_us'] / tiny['history_page']['p50_us']:.2f} |"
    )
    lines.append(
        f"| Pushgateway /metrics, {r['pushgateway_metrics_groups']} groups, p50 "
        f"| {ms(r['pushgateway_metrics']['p50_us'])} | | |"
    )
    peak = r["ingest"]["10000/64"]
    lines += [
        "",
        "| Footprint | value |",
        "|---|---|",
        f"| Release binary | {mb(r['binary_bytes'])} |",
        f"| RSS idle (empty database) | {mb(peak['ours_idle_rss'])} |",
        f"| RSS idle (10,000 targets, {big_rows} history) | {mb(big['idle_rss'])} |",
        f"| RSS peak under load (10,000 targets, c=64) | {mb(peak['ours_peak_rss'])} |",
        f"| Pushgateway RSS peak under load (10,000 groups, c=64) | {mb(peak['pushgateway_peak_rss'])} |",
        f"| Database bytes per snapshot ({big_rows} history, 90 % SYNCED, integrity hash included) "
        f"| {r['bytes_per_snapshot']:.1f} B |",
        f"| Ready after start, {big_rows} history | {big['ready_seconds'] * 1000:.0f} ms |",
        f"| Seeding the {big_rows} history through the store | {r['seed_big']['seconds']} s |",
        f"| Whole harness | {r['seconds']} s |",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    WORK = Path(tempfile.mkdtemp(prefix="bench-", dir=os.environ.get("BENCH_DIR")))
    try:
        main()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
