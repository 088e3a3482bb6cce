-- Approved bindings of a uid to a key other than the one it is derived from (wire contract
-- B.1): an owner or admin of `server_id` (or the operator's configuration) let `public_key`
-- sign in as `user_uid`. The row is the audit record of who approved it and when.
CREATE TABLE identity_bindings (
    user_uid        TEXT NOT NULL PRIMARY KEY,
    public_key      TEXT NOT NULL,
    server_id       TEXT NOT NULL,
    approved_by_uid TEXT NOT NULL,
    approved_at     INTEGER NOT NULL
) STRICT;
