-- Materialised episodes (SPEC "Drift lifecycle", /api/episodes; src/store/episode_table.rs): what
-- the derivation in src/store/episodes.rs finds, kept as snapshots commit, so a fleet-wide page
-- reads the episodes it returns instead of placing a walk in every target. Kept for the default
-- stale-after recorded in rollup_meta and complete when rollup_meta.ready is 1 (the rollups'
-- rebuild rebuilds these too); until then /api/episodes derives episodes from the snapshots.

-- Every closed episode: a run of one status, or a STALE gap.
create table episodes (
    target_id integer not null references targets (id),
    -- 0 SYNCED, 1 OUT_OF_SYNC, 2 ERROR, 3 STALE.
    state integer not null,
    started_at integer not null,
    -- The run's first snapshot; for STALE, the snapshot whose state went stale. With
    -- started_at, the page cursor.
    first_snapshot_id integer not null,
    ended_at integer not null,
    -- The run's last snapshot; for STALE, first_snapshot_id.
    last_snapshot_id integer not null,
    primary key (target_id, started_at, first_snapshot_id)
) without rowid;
create index episodes_started on episodes (started_at, first_snapshot_id);
create index episodes_ended on episodes (ended_at);

-- Per active target, its current run: open while its last check is fresh, and after stale_at a
-- run that ended then followed by an open STALE episode (from stale_start), as the clock says.
create table episode_heads (
    target_id integer primary key references targets (id),
    sync_status integer not null,
    started_at integer not null,
    first_snapshot_id integer not null,
    last_snapshot_id integer not null,
    last_check integer not null,
    -- last_check plus the last snapshot's stale-after (its own, or rollup_meta.stale_after).
    stale_at integer not null,
    -- max(stale_at, started_at): where the STALE episode after it starts.
    stale_start integer not null
);
create index episode_heads_started on episode_heads (started_at, first_snapshot_id);
create index episode_heads_stale on episode_heads (stale_start, last_snapshot_id);

-- Build them, with the rollups, at the next start.
update rollup_meta set ready = 0;
