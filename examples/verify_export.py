#!/usr/bin/env python3
"""Re-check gitops-status-server's integrity chain from a /history export, independently.

Python standard library only; written from docs/audit.md, not from the server's code.

    curl -s 'http://HOST/history?format=ndjson' > trail.ndjson
    curl -s 'http://HOST/api/chain/events' > events.ndjson         # once chains hold events
    curl -s 'http://HOST/api/checkpoints' > checkpoints.json   # only needed after retention
    python3 verify_export.py trail.ndjson --events events.ndjson --checkpoints checkpoints.json

A target's chain is its snapshots and its events (acknowledgements, retirements, their ends)
merged by id; silences and their ends form the fleet chain. Once a chain holds events, the
/history export alone no longer chains: pass the events export too. Events of targets the history
export does not hold are left out, so a history export filtered by repo or server can be checked
against the whole events export.

The export must hold whole targets (filter by repo or server, never by time, status or
changes_only). Prints {"ok", "checked", "first_bad"} as GET /api/verify does (the acknowledgement,
silence and target rows verify also cross-checks are not in these exports); exit code 0 intact,
1 broken, 2 on bad input, which includes an export that looks filtered (every row a transition, as
changes_only=true returns) and does not chain: a filtered export cannot be chain-checked.

A CSV export (format=csv) works too, with two limits the CSV format imposes: it carries no
stale_after_seconds, and its files column joins names with ", ", so a snapshot with a stale-after
override or a file name containing ", " cannot be re-checked from CSV. Use NDJSON. CSV cells that
a spreadsheet would run as a formula were sent with one more leading "'" (docs/audit.md); the
script removes it before hashing.

Signed head statements (docs/audit.md, "Head statements") are checked too when given, which
needs the PyPI package `cryptography` for Ed25519 (imported only then):

    curl -s 'http://HOST/api/chain/heads?limit=1000' > heads.json
    python3 verify_export.py trail.ndjson --events events.ndjson \
        --statements heads.json --public-key signing.pem.pub

Each statement's hash and signature (with the public key given), that they form one chain from
the first listed, and that every head they sign on a chain the export holds is that record with
that hash: a history rewritten behind a signed head, even re-hashed end to end, is named. The
output gains "statements": {"ok", "checked", "first_bad": {"seq", "reason"}}.
"""

import argparse
import csv
import hashlib
import json
import sys

VERSION = "gitops-status-chain/1"
EVENT_VERSION = "gitops-status-event/1"

# A CSV cell whose value begins, after any leading "'"s, with one of these was sent with one more
# leading "'", so a spreadsheet shows it as text (docs/audit.md, "CSV cells").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_value(cell):
    """The stored value of a CSV cell: one guarding "'" removed where the server added one."""
    if cell.startswith("'") and cell.lstrip("'").startswith(FORMULA_TRIGGERS):
        return cell[1:]
    return cell


def canonical_snapshot(snapshot, previous):
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


def canonical_event(event, previous):
    # The body is hashed as stored: compact JSON, keys in their stored order, which json.loads
    # keeps and json.dumps writes back.
    record = [
        EVENT_VERSION,
        previous,
        event["id"],
        event["repo"],
        event["server"],
        event["kind"],
        event["at"],
        event["body"],
    ]
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def events_from_ndjson(lines):
    for line in lines:
        if line.strip():
            yield json.loads(line)


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


def verify(snapshots, events, checkpoints, from_csv_export):
    resume = {(c["repo"], c["server"], c["after_id"]): c["resume_hash"] for c in checkpoints}
    targets = {(s["repo"], s["server"]) for s in snapshots}
    records = [(s["id"], 0, s) for s in snapshots]
    # Each event on its chain: its target's, or the fleet chain (repo and server null).
    records += [
        (e["id"], 1, e)
        for e in events
        if e["repo"] is None or (e["repo"], e["server"]) in targets
    ]
    previous = {}
    last_id = {}
    checked = 0
    first_bad = None
    for _, is_event, record in sorted(records, key=lambda r: (r[0], r[1])):
        checked += 1
        chain = (record["repo"], record["server"])
        fleet = chain == (None, None)
        if chain not in previous:
            previous[chain] = None if fleet else resume.get(chain + (0,))
        if is_event:
            canonical = canonical_event(record, previous[chain])
            noun = f"{record['kind']} event"
        else:
            canonical = canonical_snapshot(record, previous[chain])
            noun = "snapshot"
        expected = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        if expected != record["hash"] and first_bad is None:
            after = last_id.get(chain)
            where = "the fleet chain" if fleet else "its target"
            reason = (
                f"the hash does not match the {noun}'s fields linked to "
                + (f"the previous record of {where} (id {after})" if after else f"the start of {where}")
                + f": this {noun} was edited, or a record before it was removed or edited"
            )
            if from_csv_export and not is_event:
                reason += (
                    " (or, from CSV, it carries a stale-after override or a file name with"
                    " ', ' that CSV cannot carry: re-check the NDJSON export)"
                )
            if not events and not is_event:
                reason += (
                    " (if this trail holds acknowledgements or retirements, also pass the"
                    " /api/chain/events export with --events)"
                )
            first_bad = {
                "id": record["id"],
                "repo": record["repo"] or "",
                "server": record["server"] or "",
                "reason": reason,
                "record": "event" if is_event else "snapshot",
                "kind": record["kind"] if is_event else None,
            }
        # Go on from what is stored, so one bad record is reported once.
        if fleet:
            previous[chain] = record["hash"]
        else:
            previous[chain] = resume.get(chain + (record["id"],), record["hash"])
        last_id[chain] = record["id"]
    return {"ok": first_bad is None, "checked": checked, "first_bad": first_bad}


STATEMENT_VERSION = "gitops-status-heads/1"


def verify_statements(statements, public_key_pem, snapshots, events):
    """Checks signed head statements (GET /api/chain/heads) against the export's chains."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(public_key_pem)
    raw_key = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    hashes = {}
    for record in list(snapshots) + list(events):
        hashes[(record["repo"], record["server"], record["id"])] = record["hash"]
    chains = {(r["repo"], r["server"]) for r in list(snapshots) + list(events)}
    checked = 0
    previous = None

    def bad(seq, reason):
        return {"ok": False, "checked": checked, "first_bad": {"seq": seq, "reason": reason}}

    for listed in sorted(statements, key=lambda s: s["seq"]):
        checked += 1
        seq = listed["seq"]
        text = listed["statement"]
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != listed["hash"]:
            return bad(seq, "its hash is not the SHA-256 of its text")
        if listed["public_key"] != raw_key:
            return bad(seq, f"it was signed by key {listed['public_key']}, not by the key given")
        try:
            key.verify(bytes.fromhex(listed["signature"]), text.encode("utf-8"))
        except (InvalidSignature, ValueError):
            return bad(seq, "its signature does not verify with the key given: forged or edited")
        version, linked, signed_seq, _, _, heads, fleet = json.loads(text)
        if json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":")) != text:
            return bad(seq, "its text is not in canonical form")
        if version != STATEMENT_VERSION or signed_seq != seq:
            return bad(seq, "its version or seq differ from what is listed")
        if previous is not None and (seq != previous[0] + 1 or linked != previous[1]):
            return bad(seq, f"it does not follow statement {previous[0]}: one was removed or replaced")
        previous = (seq, listed["hash"])
        signed = [(repo, server, id_, hash_) for repo, server, id_, hash_ in heads]
        if fleet is not None:
            signed.append((None, None, fleet[0], fleet[1]))
        for repo, server, id_, hash_ in signed:
            if (repo, server) not in chains:
                continue
            stored = hashes.get((repo, server, id_))
            chain = f"{repo}/{server}" if repo is not None else "the fleet chain"
            if stored is None:
                return bad(
                    seq,
                    f"it signed record {id_} as the head of {chain}, but the export has no such "
                    "record: it was removed (or the export is older than the statement)",
                )
            if stored != hash_:
                return bad(
                    seq,
                    f"it signed record {id_} of {chain} with hash {hash_}, but the export's record "
                    f"has hash {stored}: the history up to it was rewritten after it was signed",
                )
    return {"ok": True, "checked": checked, "first_bad": None}


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
    parser.add_argument("--events", help="the NDJSON of GET /api/chain/events")
    parser.add_argument("--checkpoints", help="the JSON of GET /api/checkpoints")
    parser.add_argument("--statements", help="the JSON of GET /api/chain/heads (needs cryptography)")
    parser.add_argument("--public-key", help="the server's public key (SPKI PEM, keygen's .pub)")
    args = parser.parse_args()
    if bool(args.statements) != bool(args.public_key):
        print("verify_export.py: --statements and --public-key go together", file=sys.stderr)
        return 2
    try:
        with open(args.export, encoding="utf-8", newline="") as export:
            first = export.read(1)
            export.seek(0)
            is_csv = first != "{" and first != ""
            snapshots = list(from_csv(export) if is_csv else from_ndjson(export))
        events = []
        if args.events:
            with open(args.events, encoding="utf-8") as file:
                events = list(events_from_ndjson(file))
        checkpoints = []
        if args.checkpoints:
            with open(args.checkpoints, encoding="utf-8") as file:
                checkpoints = json.load(file)
        statements, public_key = None, None
        if args.statements:
            with open(args.statements, encoding="utf-8") as file:
                statements = json.load(file)
            with open(args.public_key, "rb") as file:
                public_key = file.read()
    except (OSError, ValueError, KeyError) as error:
        print(f"verify_export.py: cannot read the input: {error}", file=sys.stderr)
        return 2
    outcome = verify(snapshots, events, checkpoints, is_csv)
    if statements is not None:
        try:
            checked = verify_statements(statements, public_key, snapshots, events)
        except ImportError:
            print(
                "verify_export.py: checking statements needs the PyPI package cryptography "
                "(pip install cryptography)",
                file=sys.stderr,
            )
            return 2
        except ValueError as error:
            print(f"verify_export.py: cannot read the statements or key: {error}", file=sys.stderr)
            return 2
        outcome["statements"] = checked
        outcome["ok"] = outcome["ok"] and checked["ok"]
    if not outcome["ok"] and looks_filtered(snapshots):
        print(
            "verify_export.py: this export looks filtered: every row is a transition, as "
            "/history?changes_only=true returns, and the chain does not run through it. A filtered "
            "export cannot be chain-checked: the chain links every snapshot of a target, so export "
            "whole targets (filter only by repo or server). The chain first does not follow at "
            f"record {outcome['first_bad']['id']}.",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(outcome, indent=2, ensure_ascii=False))
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
