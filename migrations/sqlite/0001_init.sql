-- The drift history. Times are integer milliseconds since the Unix epoch, UTC.

-- One row per target. Its latest snapshot and status_since are not stored here: the server keeps
-- them in memory and, at start, finds them with two index seeks per target (see the store).
create table targets (
    id integer primary key,
    repo text not null,
    server text not null,
    unique (repo, server)
);

-- Distinct sets of drifted files, stored once however many snapshots repeat them.
create table filesets (
    id integer primary key,
    -- SHA-256 of `files`.
    digest blob not null unique,
    -- JSON array of file names, sorted, no duplicates.
    files text not null
);

-- Every snapshot ever acknowledged, appended in arrival order (id).
create table snapshots (
    id integer primary key,
    target_id integer not null references targets (id),
    last_check integer not null,
    -- received_at - last_check: a few seconds for a punctual reporter, so a byte or two on disk.
    received_delay integer not null,
    -- 0 SYNCED, 1 OUT_OF_SYNC, 2 ERROR.
    sync_status integer not null check (sync_status in (0, 1, 2)),
    drift_count integer not null,
    -- null: no files.
    fileset_id integer references filesets (id),
    -- Derived, not reported: bit 1 set when sync_status differs from the target's previous snapshot
    -- by last_check, bit 2 when the file set does (both for a target's first). Kept current when a
    -- late retry lands between two snapshots; the reported fields are never rewritten.
    change integer not null,
    stale_after integer,
    revision text,
    run_url text,
    message text,
    -- Reserved for the integrity chain.
    hash blob
);

-- Per-target history pages, idempotency lookups, neighbours of an insert. One check per target and
-- last_check: a different snapshot at the same last_check is a conflict.
-- There is deliberately no index on last_check alone: it would cost a fifth of the disk. Pages
-- across targets walk this index once per target over a window of time instead (see the store).
create unique index snapshots_target_time on snapshots (target_id, last_check);
-- changes_only pages; transitions are few, so this stays small.
create index snapshots_target_changes on snapshots (target_id, last_check) where change != 0;
