-- Reminders (a route's `repeat`, SPEC "Notifications"): while a state lasts, a reminder is one
-- more delivery row of the transition that started it, numbered `reminder` = 1, 2, ... after the
-- notification itself (0). The unique key (transition_id, receiver, reminder) makes a replica or
-- a restart that decides the same reminder again write nothing. `closed_at` is set on a started
-- notification once its episode is over, so the reminder pass never reads it again.
-- SQLite cannot change a table's unique key in place: the table is rebuilt, rows unchanged.
create table deliveries_reminders (
    id integer primary key,
    transition_id integer not null references transitions (id),
    receiver text not null,
    -- 0: the notification itself; n: its n-th reminder.
    reminder integer not null default 0,
    -- The same on every attempt. Reminders carry their own: `<event id>-reminder-<n>`.
    event_id text not null,
    -- started | resolved | acknowledged | ack_ended | reminder
    kind text not null,
    -- pending | delivered | failed | skipped
    status text not null,
    body text not null,
    created_at integer not null,
    attempts integer not null default 0,
    next_attempt_at integer not null,
    leased_until integer,
    delivered_at integer,
    last_error text,
    -- started notifications (reminder 0) only: when the reminder pass found the episode over (ms).
    closed_at integer,
    unique (transition_id, receiver, reminder)
);
insert into deliveries_reminders (id, transition_id, receiver, event_id, kind, status, body,
    created_at, attempts, next_attempt_at, leased_until, delivered_at, last_error)
select id, transition_id, receiver, event_id, kind, status, body, created_at, attempts,
    next_attempt_at, leased_until, delivered_at, last_error
from deliveries;
drop table deliveries;
alter table deliveries_reminders rename to deliveries;
create index deliveries_due on deliveries (status, next_attempt_at);
-- The reminder pass's work: started notifications whose episode may still be open.
create index deliveries_open on deliveries (receiver)
    where kind = 'started' and reminder = 0 and status <> 'skipped' and closed_at is null;
