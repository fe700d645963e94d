-- The drift lifecycle (SPEC "Drift lifecycle", docs/audit.md "Events"): acknowledgements,
-- silences and retirements, recorded on the integrity chain.

-- Chained records that are not snapshots. Ids share the snapshots' id space (one counter), so a
-- target's chain is its snapshots and events together in id order. `body` is the event's own
-- fields as compact JSON, hashed exactly as stored (src/chain.rs, `encode_event`).
create table events (
    id integer primary key,
    -- Null: the fleet chain, which no target owns (silences match targets by glob, including
    -- targets that do not exist yet, so a silence is recorded once, there).
    target_id integer references targets (id),
    -- ack | ack_end | silence | silence_end | retire | revive
    kind text not null,
    -- When it took effect (ms since the epoch).
    at integer not null,
    body text not null,
    hash blob not null
);
create index events_target on events (target_id, id);

create trigger events_chain_head after insert on events when new.target_id is not null
begin
    update targets set head_id = new.id, head_hash = new.hash
    where id = new.target_id and (head_id is null or head_id < new.id);
end;

-- Acknowledgements as the API reads them: each row mirrors its `ack` event and, once it ended,
-- its `ack_end` event (verify re-checks both against the chained bodies).
create table acks (
    -- The id of its `ack` event.
    id integer primary key,
    target_id integer not null references targets (id),
    reason text not null,
    by text not null,
    -- JSON array of glob patterns, or null: every file.
    files text,
    created_at integer not null,
    until integer not null,
    ended_at integer,
    -- expired | resolved | deleted | replaced
    end_reason text,
    ended_by text
);
create index acks_target on acks (target_id, id);
create index acks_open on acks (until) where ended_at is null;

-- Silences as the API reads them, mirroring their `silence` and `silence_end` events.
create table silences (
    -- The id of its `silence` event.
    id integer primary key,
    -- JSON arrays of glob patterns.
    repos text not null,
    servers text not null,
    starts_at integer not null,
    ends_at integer not null,
    reason text not null,
    by text not null,
    created_at integer not null,
    deleted_at integer,
    deleted_by text
);
create index silences_ends on silences (ends_at);

-- The acknowledgement in force (made and not ended), and when the target was retired (null
-- while it is active).
alter table targets add column ack_id integer;
alter table targets add column retired_at integer;
