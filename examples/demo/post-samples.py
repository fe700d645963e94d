#!/usr/bin/env python3
"""Post realistic drift-check snapshots to a gitops-status-server, for a living demo dashboard.

Six targets (repo/server pairs) with a day of history: drift episodes that were fixed, a check that
failed while a host was unreachable, one target drifting now, one failing now and one whose
reporter went silent two hours ago (it shows as STALE). The drift and the failure are acknowledged
(POST /api/acks); the failure's first acknowledgement was replaced by a second, so the dashboard's
annotations show one that ended and ones in force. After that, the live targets report every
--interval seconds, as a CI cron would, until the script is stopped.

The history is posted only when the server knows none of the demo targets yet, so restarting the
script does not post it twice.

    python3 examples/demo/post-samples.py                       # http://127.0.0.1:8080
    python3 examples/demo/post-samples.py --url http://gitops-status-server:8080 --interval 30
    python3 examples/demo/post-samples.py --once                # history and one round, then exit

Python standard library only. GITOPS_STATUS_SERVER_URL and GITOPS_STATUS_TOKEN are read like the
`report` client reads them.
"""

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request

MINUTE = 60
HOUR = 3600
# The demo's cron cadence in the history; snapshots say so through stale_after_seconds.
HISTORY_STEP = 5 * MINUTE
HISTORY_SPAN = 24 * HOUR
STALE_AFTER = 15 * MINUTE

PIPELINES = {"rsyslog": 7, "nginx": 12, "chrony": 19}


class Episode:
    """A status held from `start` to `end` seconds ago (end None: still going on)."""

    def __init__(self, start, end, status, files=(), message=None):
        self.start, self.end = start, end
        self.status, self.files, self.message = status, list(files), message

    def covers(self, age):
        return age <= self.start and (self.end is None or age > self.end)


class Target:
    def __init__(self, repo, server, episodes=(), silent_for=None):
        self.repo, self.server = repo, server
        self.episodes = list(episodes)
        # Seconds before now since which the reporter has stopped: no history after, no live posts.
        self.silent_for = silent_for

    def status_at(self, age):
        for episode in self.episodes:
            if episode.covers(age):
                return episode
        return Episode(0, None, "SYNCED")


TARGETS = [
    Target("rsyslog", "rsyslog-lab", [
        Episode(20 * HOUR, 18.5 * HOUR, "OUT_OF_SYNC", ["rsyslog.conf"]),
        Episode(6 * HOUR, 5.2 * HOUR, "OUT_OF_SYNC", ["rsyslog.conf", "rsyslog.d/30-lab.conf"]),
        Episode(25 * MINUTE, None, "OUT_OF_SYNC", ["rsyslog.d/30-lab.conf"]),
    ]),
    Target("rsyslog", "rsyslog-prod-1", [
        Episode(9 * HOUR, 8.66 * HOUR, "OUT_OF_SYNC", ["rsyslog.d/10-forward.conf"]),
    ]),
    Target("rsyslog", "rsyslog-prod-2", [
        Episode(14 * HOUR, 13 * HOUR, "ERROR",
                message="ssh: connect to host rsyslog-prod-2 port 22: Connection refused"),
        Episode(3 * HOUR, 2.5 * HOUR, "OUT_OF_SYNC", ["rsyslog.conf"]),
    ]),
    Target("nginx", "edge-1", [
        Episode(3 * HOUR, 2 * HOUR, "OUT_OF_SYNC", ["nginx.conf", "conf.d/default.conf"]),
        Episode(11 * HOUR, 10.5 * HOUR, "OUT_OF_SYNC", ["conf.d/default.conf"]),
    ]),
    Target("nginx", "edge-2", [
        Episode(16 * HOUR, 15 * HOUR, "OUT_OF_SYNC", ["nginx.conf"]),
        Episode(15 * MINUTE, None, "ERROR",
                message="ssh: connect to host edge-2 port 22: Connection timed out"),
    ]),
    Target("chrony", "ntp-1", [
        Episode(12 * HOUR, 11 * HOUR, "OUT_OF_SYNC", ["chrony.conf"]),
    ], silent_for=2 * HOUR),
]


def rfc3339(epoch):
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def snapshot(target, at, reference, run):
    """The check of `target` at epoch `at`, in the state its episodes give `reference - at` ago."""
    state = target.status_at(reference - at)
    body = {
        "repo": target.repo,
        "server": target.server,
        "sync_status": state.status,
        "drift_count": len(state.files),
        "files": [{"name": name} for name in state.files],
        "last_check": rfc3339(at),
        # A new commit of the repo every six hours.
        "revision": hashlib.sha1(f"{target.repo}:{int(at) // (6 * HOUR)}".encode()).hexdigest()[:7],
        "run_url": f"https://ci.example.org/repos/{PIPELINES[target.repo]}/pipeline/{run}",
        "stale_after_seconds": STALE_AFTER,
    }
    if state.message:
        body["message"] = state.message
    return body


class Client:
    def __init__(self, url, token):
        self.base = url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data, self.headers, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def wait_until_up(self, limit):
        """The server may still be starting (compose starts the demo right after it)."""
        deadline = time.monotonic() + limit
        while True:
            try:
                return self.request("GET", "/status.json")
            except (urllib.error.URLError, ConnectionError) as error:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{self.base} did not answer within {limit}s: {error}")
                time.sleep(1)

    def post(self, body, path="/api/status"):
        try:
            return self.request("POST", path, body)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise SystemExit(f"POST {path} answered {error.code}: {detail}")


def post_history(client, now):
    posted = 0
    for target in TARGETS:
        first = now - HISTORY_SPAN
        last = now - (target.silent_for or 0) - MINUTE
        at = first - first % HISTORY_STEP
        run = 4000
        while at <= last:
            client.post(snapshot(target, at, now, run))
            posted += 1
            run += 1
            at += HISTORY_STEP
    return posted


# Acknowledgements made after the history: (repo, server, reason, days it may last).
ACKS = [
    ("nginx", "edge-2", "edge-2 is being reinstalled; checks fail until it is back", 1),
    ("nginx", "edge-2", "reinstall of edge-2 takes longer: new disk on order", 3),
    ("rsyslog", "rsyslog-lab", "lab forwarding test, PR to follow", 2),
]


def post_acks(client, now):
    for repo, server, reason, days in ACKS:
        until = rfc3339(now + days * 24 * HOUR)
        client.post({"repo": repo, "server": server, "reason": reason, "until": until}, "/api/acks")
    return len(ACKS)


def post_round(client, started, run):
    now = time.time()
    live = [target for target in TARGETS if target.silent_for is None]
    for target in live:
        # A live check (after `started`) continues the state the target was in at the start.
        client.post(snapshot(target, now, started, run))
    return len(live)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("GITOPS_STATUS_SERVER_URL", "http://127.0.0.1:8080"),
                        help="server base URL (env GITOPS_STATUS_SERVER_URL; default %(default)s)")
    parser.add_argument("--interval", type=float, default=30,
                        help="seconds between live rounds (default %(default)s)")
    parser.add_argument("--once", action="store_true",
                        help="post the history and one live round, then exit")
    parser.add_argument("--wait", type=float, default=60,
                        help="seconds to wait for the server to answer (default %(default)s)")
    args = parser.parse_args()

    client = Client(args.url, os.environ.get("GITOPS_STATUS_TOKEN"))
    known = {(row["repo"], row["server"]) for row in client.wait_until_up(args.wait)}
    started = time.time()
    if known & {(target.repo, target.server) for target in TARGETS}:
        print(f"{args.url} already has the demo targets; not posting their history again", flush=True)
    else:
        count = post_history(client, started)
        print(f"posted {count} snapshots of history to {args.url}", flush=True)
        count = post_acks(client, time.time())
        print(f"posted {count} acknowledgements to {args.url}", flush=True)

    run = 5000
    while True:
        count = post_round(client, started, run)
        print(f"{rfc3339(time.time())} posted {count} live checks", flush=True)
        if args.once:
            return 0
        run += 1
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
