#!/usr/bin/env python3
"""Durable ingest of two builds (or two setups of one build) back to back, runs alternating.

    bench/ab_ingest.py OLD_BINARY NEW_BINARY            # e.g. a build of e529fa1 against HEAD's
    bench/ab_ingest.py BINARY BINARY --drop-trigger-b   # what the chain-head trigger costs

Each run: a fresh database, the server started, wrk -t2 -c64 -d3s with bench/post.lua over
TARGETS (default 10,000) targets, the server stopped. Prints the median of --runs per side.
`--drop-trigger-b` drops `snapshots_chain_head` from B's database before its run: heads go stale,
so it is a measurement, never a setup to serve from. Needs wrk (bench/run.sh installs it).
"""

import argparse
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

POST_LUA = Path(__file__).resolve().parent / "post.lua"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(binary, database):
    port = free_port()
    process = subprocess.Popen(
        [binary, "--listen", f"127.0.0.1:{port}", "--database-url", f"sqlite://{database}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            return process, port
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"{binary} not ready")


def run(binary, targets, drop_trigger):
    with tempfile.TemporaryDirectory() as scratch:
        database = f"{scratch}/ab.db"
        process, port = start(binary, database)
        if drop_trigger:
            process.terminate()
            process.wait()
            with sqlite3.connect(database) as connection:
                connection.execute("drop trigger snapshots_chain_head")
            process, port = start(binary, database)
        output = subprocess.run(
            ["wrk", "-t2", "-c64", "-d3s", "--timeout", "30s", "-s", str(POST_LUA),
             f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=True,
            env={**os.environ, "TARGETS": str(targets)},
        ).stdout
        process.terminate()
        process.wait()
        return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--drop-trigger-b", action="store_true")
    args = parser.parse_args()
    a, b = [], []
    for _ in range(args.runs):
        a.append(run(args.a, args.targets, False))
        b.append(run(args.b, args.targets, args.drop_trigger_b))
    for name, runs in (("A", a), ("B", b)):
        print(f"{name}: median {statistics.median(runs):,.0f}/s, runs {', '.join(f'{r:,.0f}' for r in runs)}")


if __name__ == "__main__":
    main()
