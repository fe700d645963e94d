#!/usr/bin/env python3
"""Measures gitops-status-server and Prometheus Pushgateway side by side on this machine.

Run through bench/run.sh, which installs wrk, Pushgateway and psql and builds the binaries. Every
figure is the median of RUNS runs (default 3); each ingest run starts from an empty database (or a
fresh Pushgateway). Output: a Markdown table on stdout, and target/bench/results.{json,md}.

When PostgreSQL answers at --postgres (an admin URL: the harness creates a database for each run
and drops it after), the same ingest at 10,000 targets and 64 connections also runs on PostgreSQL,
with one replica and with two replicas on one database, interleaved run by run with SQLite's; and
`/status.json` at 10,000 targets is read from both. --no-postgres skips it.
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
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/gitops-status-server"
SEED = ROOT / "target/release/examples/seed_history"
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"
CLK_TCK = os.sysconf("SC_CLK_TCK")
POSTGRES_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# What a server needs of PostgreSQL to be durable, and what shapes its speed; recorded with the figures.
POSTGRES_SETTINGS = (
    "server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes",
    "shared_buffers", "max_wal_size", "commit_delay",
)


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
    """A server under test on a free port; stopped with SIGTERM. Its stderr goes to `log` if given."""

    def __init__(self, argv, ready_path, env=None, log=None):
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.started = time.monotonic()
        with open(log or os.devnull, "w") as stderr:
            self.proc = subprocess.Popen(
                argv,
                cwd=WORK,
                env={**os.environ, "RUST_LOG": "warn", **(env or {})},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
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


def server(database_url, log=None):
    return Process(
        [str(BIN), "--listen", "127.0.0.1:{port}", "--database-url", database_url],
        "/readyz",
        log=log,
    )


def sqlite_url(database):
    return f"sqlite://{database}"


class Postgres:
    """The PostgreSQL server at an admin URL, reached with psql. Every database it creates is
    named after this process and dropped by `drop` or, at the latest, `drop_all`."""

    def __init__(self, admin_url):
        self.admin_url = admin_url
        self.created = []
        self.host = urllib.parse.urlsplit(admin_url).hostname or "localhost"

    def psql(self, sql, database=None):
        url = self.url(database) if database else self.admin_url
        return subprocess.run(
            ["psql", url, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
            capture_output=True, text=True, check=True,
        ).stdout.strip()

    def url(self, database):
        return urllib.parse.urlunsplit(urllib.parse.urlsplit(self.admin_url)._replace(path=f"/{database}"))

    def unreachable(self):
        """Why the harness cannot use this server, or None when it can."""
        if shutil.which("psql") is None:
            return "psql not found (bench/run.sh installs postgresql-client)"
        try:
            self.psql("select 1")
        except subprocess.CalledProcessError as error:
            reason = " ".join(line.strip() for line in error.stderr.splitlines()) or error
            return f"{redact(self.admin_url)} unreachable: {reason}"
        return None

    def settings(self):
        return {name: self.psql(f"show {name}") for name in POSTGRES_SETTINGS}

    def create(self, purpose):
        database = f"gitops_bench_{os.getpid()}_{purpose}"
        self.psql(f"create database {database}")
        self.created.append(database)
        return database

    def drop(self, database):
        self.psql(f"drop database if exists {database} with (force)")
        self.created.remove(database)

    def drop_all(self):
        for database in list(self.created):
            self.drop(database)

    def count_snapshots(self, database):
        return int(self.psql("select count(*) from snapshots", database))

    def size(self, database):
        return int(self.psql(f"select pg_database_size('{database}')"))

    def backend_cpu(self, database):
        """CPU seconds of every backend serving `database` now, by pid; empty when PostgreSQL runs
        on another machine."""
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            return {}
        pids = self.psql(f"select pid from pg_stat_activity where datname = '{database}'").split()
        cpu = {}
        for pid in pids:
            try:
                cpu[pid] = proc_cpu_seconds(pid)
            except OSError:
                pass
        return cpu


def redact(url):
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


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


def wrk(url, script, connections, duration, targets=0, threads=2, start_ms=None, headers=()):
    """Runs wrk; returns its RESULT line plus the generator's own CPU time."""
    return wrk_together([url], script, connections, duration, targets, threads, start_ms, headers)


def wrk_together(urls, script, connections, duration, targets=0, threads=2, start_ms=None,
                 headers=()):
    """Runs one wrk per URL at once, each with `connections` and `threads`, over one sequence of
    checks (see post.lua). Returns their combined RESULT: requests and errors summed, the rate the
    sum of each one's rate, p50 and p99 the worse of theirs, and the generators' CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {
        **os.environ, "TARGETS": str(targets), "WRK_THREADS": str(threads),
        "WRK_GENERATORS": str(len(urls)), "WRK_EPOCH": str(int(time.time())),
        **({"START_MS": str(start_ms)} if start_ms is not None else {}),
    }
    generators = [
        subprocess.Popen(
            [
                "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}", "--timeout", "30s",
                *[arg for header in headers for arg in ("-H", header)],
                "-s", str(ROOT / "bench" / script), url,
            ],
            env={**env, "WRK_GENERATOR": str(index)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for index, url in enumerate(urls)
    ]
    results = []
    for generator in generators:
        output, errors = generator.communicate()
        if generator.returncode != 0:
            raise RuntimeError(f"wrk failed ({generator.returncode}): {errors.strip()}")
        line = next(l for l in output.splitlines() if l.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT "):]))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        key: sum(r[key] for r in results) for key in ("requests", "non_2xx", "socket_errors")
    }
    result["duration_us"] = max(r["duration_us"] for r in results)
    result["p50_us"] = max(r["p50_us"] for r in results)
    result["p99_us"] = max(r["p99_us"] for r in results)
    result["rate"] = sum(r["requests"] / (r["duration_us"] / 1e6) for r in results)
    result["generator_cpu"] = (
        (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ) / (result["duration_us"] / 1e6)
    return result


def median(values):
    return statistics.median(values)


def summarize(runs, keys=("rate", "p50_us", "p99_us", "generator_cpu", "server_cpu", "database_cpu",
                         "cpu_us_per_snapshot", "non_2xx", "socket_errors")):
    return {key: median([run[key] for run in runs]) for key in keys if key in runs[0]}


def seed(database_url, targets, snapshots):
    output = subprocess.run(
        [str(SEED), database_url, str(targets), str(snapshots)],
        cwd=WORK, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def check_stored(result, stored, label):
    """Records `stored` in `result`; returns a problem when fewer snapshots are stored than were
    acknowledged. More may be stored: requests still in flight when wrk stops are answered to
    nobody."""
    result["stored"] = stored
    acknowledged = result["requests"] - result["non_2xx"]
    if result["non_2xx"] or result["socket_errors"]:
        PROBLEMS.append(f"{label}: {result['non_2xx']} non-2xx answers and "
                        f"{result['socket_errors']} socket errors in {result['requests']} requests")
    if stored < acknowledged - result["socket_errors"]:
        PROBLEMS.append(f"{label}: {stored} snapshots stored for {acknowledged} acknowledged")


def ingest_sqlite(targets, connections, duration, run, history=None):
    """One ingest run on a fresh SQLite database, or on a copy of `history`. Besides the rate, it
    records the server's CPU time (utime + stime) per snapshot stored by the run."""
    database = WORK / f"ingest-{targets}-{connections}-{run}.db"
    if history:
        shutil.copyfile(history, database)
    before = count_snapshots(database) if history else 0
    # Onto a history, every check must be newer than its target's latest: appends, as in
    # production, not late checks.
    start_ms = latest_check(database) + 1 if history else None
    proc = server(sqlite_url(database))
    idle_rss = proc.rss()
    cpu_before = proc.cpu()
    result = wrk(proc.url(), "post.lua", connections, duration, targets, start_ms=start_ms)
    cpu = proc.cpu() - cpu_before
    result["server_cpu"] = cpu / (result["duration_us"] / 1e6)
    result["idle_rss"] = idle_rss
    result["peak_rss"] = proc.peak_rss()
    proc.stop()
    label = f"SQLite ingest {targets}/{connections}{' onto the big history' if history else ''} run {run + 1}"
    stored = count_snapshots(database) - before
    check_stored(result, stored, label)
    result["cpu_us_per_snapshot"] = cpu * 1e6 / max(stored, 1)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    return result


def ingest_postgres(pg, targets, connections, duration, run, replicas):
    """One ingest run on a fresh PostgreSQL database: `replicas` servers on it, `connections`
    and wrk's two threads split evenly between them, all loaded at once. Afterwards the stored
    snapshots are counted and GET /api/verify must answer ok."""
    label = f"PostgreSQL ingest {targets}/{connections}, {replicas} replica(s), run {run + 1}"
    database = pg.create(f"ingest_{replicas}r_{run}")
    url = pg.url(database)
    logs = [WORK / f"{database}-{index}.log" for index in range(replicas)]
    procs = []
    try:
        for log in logs:
            procs.append(server(url, log))
        cpu_before = [proc.cpu() for proc in procs]
        backends_before = pg.backend_cpu(database)
        result = wrk_together(
            [proc.url() for proc in procs], "post.lua", connections // replicas, duration,
            targets, threads=max(1, 2 // replicas),
        )
        seconds = result["duration_us"] / 1e6
        backends_after = pg.backend_cpu(database)
        result["server_cpu"] = sum(p.cpu() - c for p, c in zip(procs, cpu_before)) / seconds
        result["database_cpu"] = sum(
            cpu - backends_before.get(pid, 0.0) for pid, cpu in backends_after.items()
        ) / seconds
        result["peak_rss"] = max(proc.peak_rss() for proc in procs)
        with urllib.request.urlopen(procs[0].url("/api/verify"), timeout=300) as response:
            verification = json.loads(response.read())
        result["verify_ok"] = verification["ok"]
        result["verify_checked"] = verification["checked"]
    except Exception:
        keep_logs(logs, label)
        raise
    finally:
        for proc in procs:
            proc.stop()
    check_stored(result, pg.count_snapshots(database), label)
    if not result["verify_ok"]:
        PROBLEMS.append(f"{label}: /api/verify answered {verification}")
    keep_logs(logs, label)
    pg.drop(database)
    return result


# Logged at every start of a server without tokens, as the harness runs it: expected, not a problem.
OPEN_WRITES_WARNING = "no tokens configured"


def keep_logs(logs, label):
    """Copies the servers' logs to target/bench/logs, so that a warning or an error is there to
    read after the run; any but the open-writes warning is a problem."""
    for log in logs:
        if not log.exists():
            continue
        kept = OUT / "logs" / log.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, kept)
        lines = [line for line in log.read_text().splitlines() if OPEN_WRITES_WARNING not in line]
        if lines:
            PROBLEMS.append(f"{label}: the server logged {len(lines)} warning or error lines, "
                            f"see {kept.relative_to(ROOT)}")


def latest_check(database):
    import sqlite3

    with sqlite3.connect(database) as db:
        return db.execute("select max(last_check) from snapshots").fetchone()[0]


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


def latency(url, runs, duration, headers=()):
    return [wrk(url, "get.lua", 1, duration, threads=1, headers=headers) for _ in range(runs)]


def status_json(proc):
    with urllib.request.urlopen(proc.url("/status.json")) as response:
        body = response.read()
    return len(json.loads(body)), len(body)


def status_json_answer(proc, headers):
    """One /status.json answer with `headers`: its status, ETag, Content-Encoding and body size."""
    request = urllib.request.Request(proc.url("/status.json"), headers=dict(headers))
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers["etag"], response.headers["content-encoding"], \
                len(response.read())
    except urllib.error.HTTPError as error:
        if error.code != 304:
            raise
        return 304, error.headers["etag"], None, 0


# The ways a dashboard asks for /status.json: plain; gzip (Go's client, hence Grafana's backend,
# sends Accept-Encoding: gzip); and revalidating the tag it holds, answered 304.
STATUS_JSON_WAYS = ("identity", "gzip", "not_modified")


def status_json_way(proc, way):
    """The request headers of `way` (the current tag for not_modified), checked on one request."""
    if way == "identity":
        return ()
    if way == "gzip":
        headers = ("Accept-Encoding: gzip",)
        status, _, encoding, _ = status_json_answer(proc, [("Accept-Encoding", "gzip")])
        if status != 200 or encoding != "gzip":
            PROBLEMS.append(f"/status.json with Accept-Encoding: gzip: {status}, encoding {encoding}")
        return headers
    _, tag, _, _ = status_json_answer(proc, [])
    status, _, _, _ = status_json_answer(proc, [("If-None-Match", tag)])
    if status != 304:
        PROBLEMS.append(f"/status.json with If-None-Match: its own tag: {status}, not 304")
    return (f"If-None-Match: {tag}",)


def status_json_sizes(proc):
    """Rows, body bytes and gzip-encoded body bytes of /status.json."""
    targets, identity = status_json(proc)
    _, _, _, gzip = status_json_answer(proc, [("Accept-Encoding", "gzip")])
    return {"targets": targets, "bytes": identity, "gzip_bytes": gzip}


def loadavg():
    with open("/proc/loadavg") as load:
        return [float(value) for value in load.read().split()[:3]]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", default="3s", help="wrk duration of each ingest run")
    parser.add_argument("--big", type=int, default=10_000_000, help="snapshots in the big history")
    parser.add_argument("--quick", action="store_true", help="1 run, 2 s, 1M-snapshot history")
    parser.add_argument("--postgres", default=POSTGRES_ADMIN_URL, metavar="URL",
                        help="PostgreSQL admin URL; a database is created and dropped for each run")
    parser.add_argument("--no-postgres", action="store_true", help="measure SQLite only")
    parser.add_argument("--postgres-big", action="store_true",
                        help="also seed PostgreSQL with the big history and read it (adds minutes)")
    parser.add_argument("--status-only", action="store_true",
                        help="only /status.json at 10,000 targets, each way of asking, both databases")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration, args.big = 1, "2s", 1_000_000

    started = time.monotonic()
    shutil.rmtree(OUT / "logs", ignore_errors=True)
    pg = None if args.no_postgres else Postgres(args.postgres)
    try:
        if args.status_only:
            results = {"load_before": loadavg(), "runs": args.runs}
            results["status_json"] = measure_status_json(args, pg, started)
        else:
            results = measure(args, pg, started)
            results["status_json"] = measure_status_json(args, pg, started)
    finally:
        if pg:
            pg.drop_all()
    results["seconds"] = round(time.monotonic() - started, 1)
    results["load_after"] = loadavg()
    results["problems"] = PROBLEMS
    OUT.mkdir(parents=True, exist_ok=True)
    name = "results-status" if args.status_only else "results"
    (OUT / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render_status_json(results) if args.status_only else render(results)
    (OUT / f"{name}.md").write_text(table)
    print(table)
    if PROBLEMS:
        sys.exit(1)


def measure(args, pg, started):
    results = {
        # post.lua's target order (ORDER=random, the default, or round-robin) and its seed.
        "order": {"order": os.environ.get("ORDER", "random"), "seed": os.environ.get("SEED", "1")},
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "cpu_model": cpu_model(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
        "runs": args.runs,
        "duration": args.duration,
        "binary_bytes": BIN.stat().st_size,
        "load_before": loadavg(),
    }
    if pg:
        unreachable = pg.unreachable()
        if unreachable:
            progress(f"PostgreSQL not measured: {unreachable}", started)
            results["postgres"] = {"skipped": unreachable}
            pg = None
        else:
            results["postgres"] = {"url": redact(pg.admin_url), "settings": pg.settings()}
    else:
        results["postgres"] = {"skipped": "--no-postgres"}

    # Ingest, side by side; at 10,000 targets and 64 connections, PostgreSQL's runs alternate with
    # SQLite's, so that the machine's drift and other load hit both alike.
    ingest = {}
    for targets in (1_000, 10_000):
        for connections in (16, 64):
            key = f"{targets}/{connections}"
            if pg and key == "10000/64":
                ours, one, two = [], [], []
                for run in range(args.runs):
                    ours.append(ingest_sqlite(targets, connections, args.duration, run))
                    one.append(ingest_postgres(pg, targets, connections, args.duration, run, 1))
                    two.append(ingest_postgres(pg, targets, connections, args.duration, run, 2))
                    progress(f"ingest {key} run {run + 1}: SQLite {ours[-1]['rate']:.0f}/s, "
                             f"PostgreSQL {one[-1]['rate']:.0f}/s, two replicas "
                             f"{two[-1]['rate']:.0f}/s", started)
                results["postgres"]["ingest"] = ingest_postgres_summary(one)
                results["postgres"]["ingest_two_replicas"] = ingest_postgres_summary(two)
            else:
                ours = [ingest_sqlite(targets, connections, args.duration, run)
                        for run in range(args.runs)]
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
    seed(sqlite_url(small), 10_000, 10_000)
    seed(sqlite_url(tiny), 10, 1_000)
    seeded = seed(sqlite_url(big), 10_000, args.big)
    results["seed_big"] = seeded
    progress(f"seeded {args.big} snapshots in {seeded['seconds']} s", started)
    # Ingest onto the big history, against the empty database's 10000/64 figure above.
    onto_big = [ingest_sqlite(10_000, 64, args.duration, run, history=big) for run in range(args.runs)]
    results["ingest_onto_big"] = summarize(onto_big)
    progress(f"ingest 10000/64 onto the big history: {results['ingest_onto_big']['rate']:.0f}/s", started)
    results["bytes_per_snapshot"] = seeded["bytes_per_snapshot"]

    history_page = "/history?repo=repo-7&server=server-7&limit=100"
    reads = {}
    for name, database in (("small", small), ("tiny", tiny), ("big", big)):
        readies = []
        for _ in range(args.runs):
            proc = server(sqlite_url(database))
            readies.append(proc.ready_seconds)
            proc.stop()
        proc = server(sqlite_url(database))
        reads[name] = {
            "ready_seconds": median(readies),
            "idle_rss": proc.rss(),
            "history_page": summarize(latency(proc.url(history_page), args.runs, "2s")),
        }
        if pg and (name == "small" or (name == "big" and args.postgres_big)):
            paths = ["/status.json"] + ([history_page] if name == "big" else [])
            ours, theirs, setup = reads_side_by_side(
                pg, proc, 10_000 if name == "small" else args.big, paths, args.runs, started)
            reads[name]["status_json"] = ours["/status.json"]
            if name == "big":
                reads[name]["history_page"] = ours[history_page]
            results["postgres"].setdefault("reads", {})[name] = {
                **setup,
                "status_json": theirs["/status.json"],
                **({"history_page": theirs[history_page]} if name == "big" else {}),
            }
        elif name != "tiny":
            reads[name]["status_json"] = summarize(latency(proc.url("/status.json"), args.runs, "2s"))
        if name != "tiny":
            reads[name]["status_json_targets"], reads[name]["status_json_bytes"] = status_json(proc)
        proc.stop()
    results["reads"] = reads

    # Pushgateway's /metrics with 10,000 groups.
    proc = pushgateway(primed_pushgateway_state(10_000))
    results["pushgateway_metrics_groups"] = groups(proc)
    results["pushgateway_metrics"] = summarize(latency(proc.url("/metrics"), args.runs, "3s"))
    proc.stop()
    return results


def measure_status_json(args, pg, started):
    """/status.json at 10,000 targets (one fresh check each), asked each way of STATUS_JSON_WAYS
    with one connection, from a server on SQLite and one on a PostgreSQL database seeded alike,
    one run of each in turn. Seeded checks are spread over the last 2 minutes, so none goes
    stale during the runs (stale targets would change the answer every second)."""
    sqlite_db = WORK / "status.db"
    seed(sqlite_url(sqlite_db), 10_000, 10_000)
    procs = {"sqlite": server(sqlite_url(sqlite_db))}
    logs = []
    if pg:
        database = pg.create("status_10000")
        seed(pg.url(database), 10_000, 10_000)
        pg.psql("vacuum (analyze)", database)
        logs.append(WORK / f"{database}.log")
        procs["postgres"] = server(pg.url(database), logs[-1])
    try:
        measured = {name: status_json_sizes(proc) for name, proc in procs.items()}
        for way in STATUS_JSON_WAYS:
            headers = {name: status_json_way(proc, way) for name, proc in procs.items()}
            runs = {name: [] for name in procs}
            for _ in range(args.runs):
                for name, proc in procs.items():
                    runs[name] += latency(proc.url("/status.json"), 1, "2s", headers[name])
            for name in procs:
                measured[name][way] = summarize(runs[name])
            progress(f"/status.json {way}: " + ", ".join(
                f"{name} {ms(measured[name][way]['p50_us'])}" for name in procs), started)
    finally:
        for proc in procs.values():
            proc.stop()
    keep_logs(logs, "PostgreSQL /status.json reads")
    if pg:
        pg.drop(database)
    return measured


def render_status_json(r):
    reads = r["status_json"]
    sqlite = reads["sqlite"]
    pg = reads.get("postgres")
    lines = [
        f"/status.json, {sqlite['targets']:,} targets, 1 connection, medians of {r['runs']} runs of 2 s "
        f"(load {r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after)",
        "",
        "| Asked | SQLite p50 / p99 | PostgreSQL p50 / p99 |",
        "|---|---|---|",
    ]
    titles = {
        "identity": f"plain ({mb(sqlite['bytes'])})",
        "gzip": f"`Accept-Encoding: gzip` ({sqlite['gzip_bytes'] / 1000:.0f} kB sent)",
        "not_modified": "`If-None-Match` with the current tag: 304",
    }
    for way in STATUS_JSON_WAYS:
        theirs = f"{ms(pg[way]['p50_us'])} / {ms(pg[way]['p99_us'])}" if pg else "not measured"
        lines.append(f"| {titles[way]} | {ms(sqlite[way]['p50_us'])} / {ms(sqlite[way]['p99_us'])} "
                     f"| {theirs} |")
    if r.get("problems"):
        lines += ["", "Problems:"] + [f"- {problem}" for problem in r["problems"]]
    return "\n".join(lines) + "\n"


def ingest_postgres_summary(runs):
    summary = summarize(runs)
    summary["peak_rss"] = median([run["peak_rss"] for run in runs])
    summary["verify_ok"] = all(run["verify_ok"] for run in runs)
    summary["runs"] = runs
    return summary


def reads_side_by_side(pg, sqlite_proc, snapshots, paths, runs, started):
    """Reads `paths` from SQLite's server (already up) and from a server on a PostgreSQL database
    seeded alike (10,000 targets, `snapshots` in all), one run of each in turn. Returns SQLite's
    and PostgreSQL's summaries by path, and what PostgreSQL's side cost to set up."""
    database = pg.create(f"reads_{snapshots}")
    url = pg.url(database)
    seeded = seed(url, 10_000, snapshots)
    progress(f"seeded {snapshots} snapshots into PostgreSQL in {seeded['seconds']} s", started)
    # Right after a bulk load the planner has no statistics and `targets` is full of dead row
    # versions (the seeder updates each target's row once per batch), so a /history page
    # seq-scans `targets`. Autovacuum fixes both within minutes; measure what it leaves.
    vacuum_started = time.monotonic()
    pg.psql("vacuum (analyze)", database)
    vacuum_seconds = time.monotonic() - vacuum_started
    log = WORK / f"{database}.log"
    proc = server(url, log)
    idle_rss = proc.rss()
    ours, theirs = {}, {}
    try:
        for path in paths:
            ours[path], theirs[path] = [], []
            for _ in range(runs):
                ours[path] += latency(sqlite_proc.url(path), 1, "2s")
                theirs[path] += latency(proc.url(path), 1, "2s")
            ours[path], theirs[path] = summarize(ours[path]), summarize(theirs[path])
        setup = {
            "snapshots": snapshots,
            "seed_seconds": seeded["seconds"],
            "vacuum_seconds": round(vacuum_seconds, 2),
            "database_bytes": pg.size(database),
            "ready_seconds": proc.ready_seconds,
            "idle_rss": idle_rss,
            "rss_after_reads": proc.rss(),
        }
    finally:
        proc.stop()
    keep_logs([log], f"PostgreSQL reads, {snapshots} snapshots")
    pg.drop(database)
    progress(f"/status.json p50 at {snapshots} snapshots: SQLite {ms(ours['/status.json']['p50_us'])}, "
             f"PostgreSQL {ms(theirs['/status.json']['p50_us'])}", started)
    return ours, theirs, setup


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
    print(f"[{time.monotonic() - started:6.1f} s, load {loadavg()[0]:.2f}] {message}",
          file=sys.stderr, flush=True)


def ms(us):
    return f"{us / 1000:.2f} ms"


def mb(b):
    return f"{b / 2**20:.1f} MiB"


def render(r):
    big_rows = f"{r['seed_big']['snapshots']:,}-snapshot"
    lines = [
        f"Machine: {r['machine']['cpus']} CPUs ({r['machine']['cpu_model']}), "
        f"{r['machine']['memory_gib']} GiB, Linux {r['machine']['kernel']}. "
        f"Medians of {r['runs']} runs; ingest runs last {r['duration']}; load generator on the same machine. "
        f"Load average {r['load_before'][0]:.2f} at the start, {r['load_after'][0]:.2f} at the end.",
        "",
    ]
    if r["problems"]:
        lines += ["**Problems** (the harness exits 1):", ""]
        lines += [f"- {problem}" for problem in r["problems"]]
        lines.append("")
    lines += [
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
    durable = r["ingest"]["10000/64"]["ours"]
    onto = r["ingest_onto_big"]
    lines += [
        "",
        f"Pushgateway with `--push.disable-consistency-check`, 10000 / 64: {unchecked['rate']:.0f}/s, "
        f"p50 {ms(unchecked['p50_us'])}, p99 {ms(unchecked['p99_us'])}.",
        "",
        "| Goal, 10,000 targets, c=64, target order " + r["order"]["order"] + " | measured | goal |",
        "|---|---|---|",
        f"| Durable SQLite / Pushgateway in memory (consistency check off) | "
        f"{durable['rate']:.0f}/s / {unchecked['rate']:.0f}/s = "
        f"**{durable['rate'] / max(unchecked['rate'], 1e-9):.2f}** | ≥ 1.00 |",
        f"| Server CPU per stored snapshot (utime + stime / stored) | "
        f"**{durable['cpu_us_per_snapshot']:.1f} µs** | ≤ 30 µs |",
        f"| p99 | {ms(durable['p99_us'])} | ≤ 20 ms |",
        f"| Ingest onto the {big_rows} history / onto an empty database | "
        f"{onto['rate']:.0f}/s / {durable['rate']:.0f}/s = **{onto['rate'] / max(durable['rate'], 1e-9):.2f}** "
        f"({onto['cpu_us_per_snapshot']:.1f} µs per snapshot) | ≥ 0.80 |",
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
    return "\n".join(lines + render_postgres(r)) + "\n\n" + render_status_json(r)


def render_postgres(r):
    pg = r["postgres"]
    if "skipped" in pg:
        return ["", f"PostgreSQL: not measured ({pg['skipped']})."]
    settings = pg["settings"]
    sqlite_ingest = r["ingest"]["10000/64"]["ours"]
    lines = [
        "",
        f"PostgreSQL {settings['server_version']} at {pg['url']} on the same machine (fsync "
        f"{settings['fsync']}, synchronous_commit {settings['synchronous_commit']}, shared_buffers "
        f"{settings['shared_buffers']}). Each ingest run on a fresh database, alternating with "
        f"SQLite's runs; p50 / p99 of two replicas: the worse of the two wrks.",
        "",
        "| Ingest, 10,000 targets, c=64, durable | snapshots/s | p50 / p99 | wrk CPU | server CPU "
        "| PostgreSQL backends' CPU | stored / acknowledged (median run) | /api/verify |",
        "|---|---|---|---|---|---|---|---|",
        f"| SQLite, one server | {sqlite_ingest['rate']:.0f}/s "
        f"| {ms(sqlite_ingest['p50_us'])} / {ms(sqlite_ingest['p99_us'])} "
        f"| {sqlite_ingest['generator_cpu']:.2f} cores | {sqlite_ingest['server_cpu']:.2f} cores | | | |",
    ]
    for name, row in (("PostgreSQL, one server", pg["ingest"]),
                      ("PostgreSQL, two servers (wrk -t1 -c32 on each)", pg["ingest_two_replicas"])):
        middle = sorted(row["runs"], key=lambda run: run["rate"])[len(row["runs"]) // 2]
        lines.append(
            f"| {name} | {row['rate']:.0f}/s | {ms(row['p50_us'])} / {ms(row['p99_us'])} "
            f"| {row['generator_cpu']:.2f} cores | {row['server_cpu']:.2f} cores "
            f"| {row['database_cpu']:.2f} cores "
            f"| {middle['stored']:,} / {middle['requests'] - middle['non_2xx']:,} "
            f"| {'ok' if row['verify_ok'] else 'FAILED'} |"
        )
    lines += [
        "",
        "| Read, 10,000 targets, 1 connection | SQLite p50 / p99 | PostgreSQL p50 / p99 |",
        "|---|---|---|",
    ]
    history_page = "/history page (limit 100, one target)"
    for name, reads in pg["reads"].items():
        ours = r["reads"][name]
        rows = f"{reads['snapshots']:,} snapshots"
        lines.append(
            f"| /status.json, {rows} | {ms(ours['status_json']['p50_us'])} / "
            f"{ms(ours['status_json']['p99_us'])} | {ms(reads['status_json']['p50_us'])} / "
            f"{ms(reads['status_json']['p99_us'])} |"
        )
        if "history_page" in reads:
            lines.append(
                f"| {history_page}, {rows} | {ms(ours['history_page']['p50_us'])} / "
                f"{ms(ours['history_page']['p99_us'])} | {ms(reads['history_page']['p50_us'])} / "
                f"{ms(reads['history_page']['p99_us'])} |"
            )
    lines.append("")
    lines += [
        f"PostgreSQL database with {reads['snapshots']:,} snapshots: {mb(reads['database_bytes'])} "
        f"(pg_database_size), seeded "
        f"in {reads['seed_seconds']} s and vacuumed (`vacuum (analyze)`, as autovacuum would) in "
        f"{reads['vacuum_seconds']} s, server ready in {reads['ready_seconds'] * 1000:.0f} ms, RSS "
        f"{mb(reads['idle_rss'])} idle and {mb(reads['rss_after_reads'])} after the reads."
        for reads in pg["reads"].values()
    ]
    return lines


OUT = ROOT / "target/bench"
# Lost snapshots, failed answers, a chain that does not verify, server warnings: printed with the
# tables and kept in results.json; the harness then exits 1.
PROBLEMS = []

if __name__ == "__main__":
    WORK = Path(tempfile.mkdtemp(prefix="bench-", dir=os.environ.get("BENCH_DIR")))
    try:
        main()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
