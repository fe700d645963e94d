-- The integrity chain (src/chain.rs, docs/audit.md) and what retention needs to keep it verifiable.

-- Each target's newest snapshot in arrival order (the greatest id) and its hash: the link the next
-- snapshot of the target is hashed with. Kept by the trigger below, in the inserting statement.
alter table targets add column head_id integer;
alter table targets add column head_hash blob;

create trigger snapshots_chain_head after insert on snapshots
begin
    update targets set head_id = new.id, head_hash = new.hash
    where id = new.target_id and (head_id is null or head_id < new.id);
end;

-- Gaps that retention cut into a target's chain. The retained snapshots after `after_id` (0: the
-- target's start) were hashed with `resume_hash`, the hash of the last snapshot removed there.
create table chain_checkpoints (
    target_id integer not null references targets (id),
    after_id integer not null,
    resume_hash blob not null,
    -- Snapshots removed in this gap, over every retention run.
    removed integer not null,
    -- When retention last widened this gap (ms since the epoch).
    pruned_at integer not null,
    primary key (target_id, after_id)
) without rowid;

-- One-time work the server does at its next start (src/store/sqlite/audit.rs).
create table pending_maintenance (task text primary key);
-- History stored before this migration has no hashes yet.
insert into pending_maintenance (task) select 'hash-history' where exists (select 1 from snapshots);
