-- Signed head statements: the same table as migrations/sqlite/0006_head_statements.sql. Replicas
-- that sign at once race for the next `seq`; the loser's insert fails and it signs again on top.
create table head_statements (
    seq bigint primary key,
    at bigint not null,
    body text not null,
    hash bytea not null,
    signature bytea not null,
    public_key bytea not null
);
