-- Signed head statements (SPEC "Evidence that does not depend on trusting the database"): with
-- --signing-key, the server signs every chain's head now and then (src/signing.rs). One chain of
-- statements: each names the hash of the one before it, and `seq` (one more than the previous
-- statement's) is the key, so two replicas that sign at once cannot both extend the same
-- statement: the second insert fails and signs again after the first.
create table head_statements (
    seq integer primary key,
    -- When it was made (ms); also inside `body`.
    at integer not null,
    -- The canonical encoding (docs/audit.md), exactly the bytes signed and hashed.
    body text not null,
    -- SHA-256 of `body`: what the next statement's `previous` is.
    hash blob not null,
    -- Ed25519 over `body`, and the public key that made it (32 bytes).
    signature blob not null,
    public_key blob not null
);
