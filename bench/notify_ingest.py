#!/usr/bin/env python3
"""Durable ingest with and without notifications, runs alternating, in one harness run.

    bench/notify_ingest.py [BINARY] [--runs 5] [--targets 10000] [--duration 5] [--delay 2]

Each run: a fresh SQLite database, the server started, wrk -t2 -c64 with bench/post.lua over
TARGETS targets (one check in ten OUT_OF_SYNC, so targets keep entering and leaving drift), the
server stopped. Side "off" runs without a notify file. Side "on" runs with a notify file whose
one route matches every target and every state (OUT_OF_SYNC, ERROR, STALE, no `for`) and sends
them to a webhook receiver in this script that holds every request DELAY seconds before
answering 204: a slow receiver, so the outbox fills while ingest goes on. Prints the median rate
per side and on/off (SPEC's goal: on within 10 % of off), and how long after the load each "on"
run's dispatcher had decided every transition. Needs wrk (bench/run.sh installs it)
and a release build (`cargo build --release --bin gitops-status-server`).
"""

import argparse
import http.server
import json
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POST_LUA = ROOT / "bench" / "post.lua"
BINARY = ROOT / "target" / "release" / "gitops-status-server"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SlowReceiver:
    """A webhook receiver on a free port that holds each request `delay` seconds, then 204."""

    def __init__(self, delay):
        receiver = self
        self.received = 0
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(delay)
                with receiver.lock:
                    receiver.received += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def start(binary, database, notify_file):
    port = free_port()
    argv = [str(binary), "--listen", f"127.0.0.1:{port}", "--database-url", f"sqlite://{database}"]
    if notify_file:
        argv += ["--notify-file", str(notify_file)]
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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


def run(binary, targets, duration, notify_file):
    with tempfile.TemporaryDirectory() as scratch:
        database = f"{scratch}/notify.db"
        process, port = start(binary, database, notify_file)
        output = subprocess.run(
            ["wrk", "-t2", "-c64", f"-d{duration}s", "--timeout", "30s", "-s", str(POST_LUA),
             f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=True,
            env={**os.environ, "TARGETS": str(targets), "WRK_EPOCH": str(int(time.time()))},
        ).stdout
        # How long after the load the dispatcher has decided every transition: on SQLite its
        # writes queue behind the ingest writer's, so under full load it falls behind.
        catch_up = None
        if notify_file:
            stopped = time.monotonic()
            while time.monotonic() - stopped < 120:
                with sqlite3.connect(database) as connection:
                    cursor = connection.execute("select position from notify_cursor").fetchone()[0]
                    last = connection.execute("select max(id) from transitions").fetchone()[0]
                if last is None or cursor >= last:
                    catch_up = time.monotonic() - stopped
                    break
                time.sleep(0.2)
        process.terminate()
        process.wait()
        with sqlite3.connect(database) as connection:
            transitions = connection.execute("select count(*) from transitions").fetchone()[0]
            deliveries = connection.execute(
                "select count(*) from deliveries where status <> 'skipped'").fetchone()[0]
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        return {"rate": rate, "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
                "transitions": transitions, "deliveries": deliveries, "catch_up": catch_up}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", nargs="?", default=str(BINARY))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--delay", type=float, default=2.0,
                        help="seconds the receiver holds each request")
    args = parser.parse_args()
    receiver = SlowReceiver(args.delay)
    with tempfile.TemporaryDirectory() as scratch:
        notify_file = Path(scratch) / "notify.toml"
        notify_file.write_text(
            f'[[receivers]]\nname = "slow"\nkind = "webhook"\nurl = "{receiver.url}"\n'
            'secret = "bench"\n'
            '[[routes]]\nreceiver = "slow"\nstates = ["OUT_OF_SYNC", "ERROR", "STALE"]\n'
        )
        off, on = [], []
        for _ in range(args.runs):
            off.append(run(args.binary, args.targets, args.duration, None))
            on.append(run(args.binary, args.targets, args.duration, notify_file))
    result = {}
    for name, runs in (("off", off), ("on", on)):
        rates = [r["rate"] for r in runs]
        result[name] = {
            "median_rate": statistics.median(rates), "rates": rates,
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "transitions": statistics.median(r["transitions"] for r in runs),
            "deliveries": statistics.median(r["deliveries"] for r in runs),
        }
        print(f"notifications {name}: median {statistics.median(rates):,.0f}/s, runs "
              f"{', '.join(f'{r:,.0f}' for r in rates)}; median transitions "
              f"{result[name]['transitions']:,.0f}, deliveries {result[name]['deliveries']:,.0f}, "
              f"non-2xx {result[name]['non_2xx']}")
    catch_up = [r["catch_up"] for r in on]
    result["on"]["catch_up_seconds"] = catch_up
    print("with notifications, every transition decided "
          + ", ".join("never (120 s)" if c is None else f"{c:.1f} s" for c in catch_up)
          + " after the load stopped")
    ratio = result["on"]["median_rate"] / result["off"]["median_rate"]
    result["on_over_off"] = ratio
    result["received_by_receiver"] = receiver.received
    print(f"on/off: {ratio:.3f} ({(ratio - 1) * 100:+.1f} %); the slow receiver answered "
          f"{receiver.received} requests")
    out = ROOT / "target" / "bench" / "notify.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ratio >= 0.9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
