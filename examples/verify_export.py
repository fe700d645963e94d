#!/usr/bin/env python3
"""Re-check gitops-status-server's integrity chain from a /history export, independently.

Python standard library only; written from docs/audit.md, not from the server's code.

    curl -s 'http://HOST/history?format=ndjson' > trail.ndjson
    curl -s 'http://HOST/api/checkpoints' > checkpoints.json   # only needed after retention
    python3 verify_export.py trail.ndjson --checkpoints checkpoints.json

The export must hold whole targets (filter by repo or server, never by time or status). Prints
{"ok", "checked", "first_bad"} as GET /api/verify does; exit code 0 intact, 1 broken, 2 on bad
input. A CSV export (format=csv) works too, with two limits the CSV format imposes: it carries
no stale_after_seconds, and its files column joins names with ", ", so a snapshot with a
stale-after override or a file name containing ", " cannot be re-checked from CSV. Use NDJSON.
"""

import argparse
import csv
import hashlib
import json
import sys

VERSION = "gitops-status-chain/1"


def canonical(snapshot, previous):
    record = [
        VERSION,
        previous,
        snapshot["id"],
        snapshot["repo"],
        snapshot["server"],
        snapshot["sync_status"],
        snapshot["drift_count"],
        snapshot["files"],
        snapshot["last_check"],
        snapshot["received_at"],
        snapshot["revision"],
        snapshot["run_url"],
        snapshot["message"],
        snapshot["stale_after_seconds"],
    ]
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def from_ndjson(lines):
    for line in lines:
        if line.strip():
            row = json.loads(line)
            row["files"] = [entry["name"] for entry in row["files"]]
            yield row


def from_csv(lines):
    def optional(text):
        return text if text != "" else None

    for row in csv.DictReader(lines):
        yield {
            "id": int(row["id"]),
            "repo": row["repo"],
            "server": row["server"],
            "sync_status": row["sync_status"],
            "drift_count": int(row["drift_count"]),
            "files": row["files"].split(", ") if row["files"] else [],
            "last_check": row["last_check"],
            "received_at": row["received_at"],
            "revision": optional(row["revision"]),
            "run_url": optional(row["run_url"]),
            "message": optional(row["message"]),
            "stale_after_seconds": None,
            "hash": row["hash"],
        }


def verify(snapshots, checkpoints, from_csv_export):
    resume = {(c["repo"], c["server"], c["after_id"]): c["resume_hash"] for c in checkpoints}
    previous = {}
    last_id = {}
    checked = 0
    first_bad = None
    for snapshot in sorted(snapshots, key=lambda s: s["id"]):
        checked += 1
        target = (snapshot["repo"], snapshot["server"])
        if target not in previous:
            previous[target] = resume.get(target + (0,))
        expected = hashlib.sha256(
            canonical(snapshot, previous[target]).encode("utf-8")
        ).hexdigest()
        if expected != snapshot["hash"] and first_bad is None:
            after = last_id.get(target)
            reason = (
                "the hash does not match the snapshot's fields linked to "
                + (f"the previous snapshot of its target (id {after})" if after else "its target's start")
                + ": this snapshot was edited, or one before it was removed or edited"
            )
            if from_csv_export:
                reason += (
                    " (or, from CSV, it carries a stale-after override or a file name with"
                    " ', ' that CSV cannot carry: re-check the NDJSON export)"
                )
            first_bad = {
                "id": snapshot["id"],
                "repo": snapshot["repo"],
                "server": snapshot["server"],
                "reason": reason,
            }
        # Go on from what is stored, so one bad row is reported once.
        previous[target] = resume.get(target + (snapshot["id"],), snapshot["hash"])
        last_id[target] = snapshot["id"]
    return {"ok": first_bad is None, "checked": checked, "first_bad": first_bad}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="a /history export: NDJSON, or CSV (see the limits)")
    parser.add_argument("--checkpoints", help="the JSON of GET /api/checkpoints")
    args = parser.parse_args()
    try:
        with open(args.export, encoding="utf-8", newline="") as export:
            first = export.read(1)
            export.seek(0)
            is_csv = first != "{" and first != ""
            snapshots = list(from_csv(export) if is_csv else from_ndjson(export))
        checkpoints = []
        if args.checkpoints:
            with open(args.checkpoints, encoding="utf-8") as file:
                checkpoints = json.load(file)
    except (OSError, ValueError, KeyError) as error:
        print(f"verify_export.py: cannot read the input: {error}", file=sys.stderr)
        return 2
    outcome = verify(snapshots, checkpoints, is_csv)
    print(json.dumps(outcome, indent=2, ensure_ascii=False))
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
