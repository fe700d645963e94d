-- The drift lifecycle: the same tables and columns as migrations/sqlite/0003_lifecycle.sql.
-- Event ids come from snapshots_id_seq, drawn while the target's row (or, for the fleet chain,
-- the fleet lock) is held, so each chain's ids follow its commit order.

create table events (
    id bigint primary key,
    target_id bigint references targets (id),
    kind text not null,
    at bigint not null,
    body text not null,
    hash bytea not null
);
create index events_target on events (target_id, id);

create table acks (
    id bigint primary key,
    target_id bigint not null references targets (id),
    reason text not null,
    by text not null,
    files text,
    created_at bigint not null,
    until bigint not null,
    ended_at bigint,
    end_reason text,
    ended_by text
);
create index acks_target on acks (target_id, id);
create index acks_open on acks (until) where ended_at is null;

create table silences (
    id bigint primary key,
    repos text not null,
    servers text not null,
    starts_at bigint not null,
    ends_at bigint not null,
    reason text not null,
    by text not null,
    created_at bigint not null,
    deleted_at bigint,
    deleted_by text
);
create index silences_ends on silences (ends_at);

alter table targets add column ack_id bigint;
alter table targets add column retired_at bigint;
