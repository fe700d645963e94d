-- Per-target daily rollups (SPEC "For Grafana and reports"): what /api/stats needs of each whole
-- UTC day, so a window reads a row per target and day instead of every snapshot. A day holds the
-- checks whose last_check falls in it and, per state, the part of every closed hold (from a
-- snapshot's last_check to the next snapshot's) that falls in it; the target's open hold after
-- its latest snapshot is in no row. Retirement, acknowledgements and silences are not in here:
-- they come from the events tables, which are small. Kept in the transaction that writes the
-- snapshots; never pruned by retention (a row per target and day).
create table rollups (
    target_id bigint not null references targets (id),
    -- The day's first millisecond, UTC.
    day bigint not null,
    checks bigint not null,
    synced_ms bigint not null,
    out_of_sync_ms bigint not null,
    error_ms bigint not null,
    -- Beyond the holding snapshot's stale-after: its own, or rollup_meta.stale_after.
    stale_ms bigint not null,
    primary key (target_id, day)
);

-- One row: the default stale-after (seconds) the rollups were computed with, and whether they
-- are complete (1). A replica with another --stale-after rebuilds them; until `ready` is 1 (or
-- while the default differs from its own), /api/stats reads raw snapshots. Writers keep the
-- rollups for the default recorded here, whatever their own.
create table rollup_meta (
    id bigint primary key check (id = 1),
    stale_after bigint not null,
    ready bigint not null
);
