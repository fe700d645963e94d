-- The notifications' outbox (SPEC "Notifications"): every transition worth telling people about,
-- written in the same transaction as the record that caused it (a snapshot that changed the
-- state, an acknowledgement made or ended), or by the STALE timer for a reporter that went
-- quiet. Delivery reads it in id order and keeps its own progress; nothing here is rewritten.
create table transitions (
    id integer primary key,
    target_id integer not null references targets (id),
    -- entered | left (a state), ack (made), ack_end (expired, resolved, deleted, replaced)
    kind text not null,
    -- entered/left: OUT_OF_SYNC, ERROR or STALE; ack/ack_end: the target's sync_status then.
    state text not null,
    -- When it happened (ms): the snapshot's last_check, the event's time, or when the target
    -- went stale.
    at integer not null,
    -- The snapshot or event that caused it; null for STALE found by the clock.
    record_id integer,
    -- A second writer of the same transition (another replica's STALE timer) writes nothing.
    unique (target_id, kind, state, at)
);
