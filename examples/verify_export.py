#!/usr/bin/env python3
"""Re-check gitops-status-server's integrity chain from a /history export, independently.

Python standard library only; written from docs/audit.md, not from the server's code.

    curl -s 'http://HOST/history?format=ndjson' > trail.ndjson
    curl -s 'http://HOST/api/checkpoints' > checkpoints.json   # only needed after retention
    python3 verify_export.py trail.ndjson --checkpoints checkpoints.json

The export must hold whole targets (filter by repo or server, never by time, status or
changes_only). Prints {"ok", "checked", "first_bad"} as GET /api/verify does; exit code 0 intact,
1 broken, 2 on bad input, which includes an export that looks filtered (every row a transition, as
changes_only=true returns) and does not chain: a filtered export cannot be chain-checked.

A CSV export (format=csv) works too, with two limits the CSV format imposes: it carries no
stale_after_seconds, and its files column joins names with ", ", so a snapshot with a stale-after
override or a file name containing ", " cannot be re-checked from CSV. Use NDJSON. CSV cells that
a spreadsheet would run as a formula were sent with one more leading "'" (docs/audit.md); the
script removes it before hashing.
"""

import argparse
import csv
import hashlib
import json
import sys

VERSION = "gitops-status-chain/1"

# A CSV cell whose value begins, after any leading "'"s, with one of these was sent with one more
# leading "'", so a spreadsheet shows it as text (docs/audit.md, "CSV cells").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_value(cell):
    """The stored value of a CSV cell: one guarding "'" removed where the server added one."""
    if cell.startswith("'") and cell.lstrip("'").startswith(FORMULA_TRIGGERS):
        return cell[1:]
    return cell


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

    for raw in csv.DictReader(lines):
        row = {column: csv_value(cell) for column, cell in raw.items()}
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


def looks_filtered(snapshots):
    """True when every row differs from its target's previous row in sync_status or files, as in
    a changes_only=true export, and some target has more than one row."""
    last = {}
    pairs = 0
    for snapshot in sorted(snapshots, key=lambda s: (s["last_check"], s["id"])):
        target = (snapshot["repo"], snapshot["server"])
        state = (snapshot["sync_status"], tuple(snapshot["files"]))
        if target in last:
            pairs += 1
            if last[target] == state:
                return False
        last[target] = state
    return pairs > 0


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
    if not outcome["ok"] and looks_filtered(snapshots):
        print(
            "verify_export.py: this export looks filtered: every row is a transition, as "
            "/history?changes_only=true returns, and the chain does not run through it. A filtered "
            "export cannot be chain-checked: the chain links every snapshot of a target, so export "
            "whole targets (filter only by repo or server). The chain first does not follow at "
            f"snapshot {outcome['first_bad']['id']}.",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(outcome, indent=2, ensure_ascii=False))
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
