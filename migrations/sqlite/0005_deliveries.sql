-- Notification deliveries (SPEC "Notifications"): one row per (transition, receiver) that the
-- routes decided on, written by the dispatcher and worked off by the delivery tasks. A decision
-- not to notify (a flap shorter than `for`, an acknowledged, silenced or retired target) is kept
-- as `skipped`, so a replica or a restart never decides the same transition twice.
create table deliveries (
    id integer primary key,
    transition_id integer not null references transitions (id),
    receiver text not null,
    -- The same on every attempt and for every receiver of the transition: X-GitOps-Event-Id.
    event_id text not null,
    -- started | resolved | acknowledged | ack_ended
    kind text not null,
    -- pending | delivered | failed | skipped
    status text not null,
    -- What is posted, fixed when decided so every attempt sends the same bytes.
    body text not null,
    created_at integer not null,
    attempts integer not null default 0,
    next_attempt_at integer not null,
    -- A delivery task holds the row until then (ms); another may take it afterwards.
    leased_until integer,
    delivered_at integer,
    last_error text,
    unique (transition_id, receiver)
);
-- The delivery tasks' queue: due pending rows.
create index deliveries_due on deliveries (status, next_attempt_at);

-- How far the dispatcher has decided every transition (ids at or below are all decided).
create table notify_cursor (
    id integer primary key check (id = 1),
    position integer not null
);
insert into notify_cursor (id, position) values (1, 0);
