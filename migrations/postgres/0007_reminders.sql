-- Reminders: the same change as migrations/sqlite/0008_reminders.sql (a `reminder` number in the
-- deliveries' unique key, `closed_at` on started notifications whose episode is over).
alter table deliveries add column reminder bigint not null default 0;
alter table deliveries add column closed_at bigint;
alter table deliveries drop constraint deliveries_transition_id_receiver_key;
alter table deliveries add constraint deliveries_transition_id_receiver_reminder_key
    unique (transition_id, receiver, reminder);
create index deliveries_open on deliveries (receiver)
    where kind = 'started' and reminder = 0 and status <> 'skipped' and closed_at is null;
