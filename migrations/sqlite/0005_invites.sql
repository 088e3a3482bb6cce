-- Invites to a server (Part D). The code is shown once when the invite is made; only its
-- SHA-256 (lowercase hex) is kept. The use count is raised by the authority, which decides
-- redemptions one at a time, so the limit holds however many arrive at once.
CREATE TABLE invites (
    id             TEXT NOT NULL PRIMARY KEY,
    server_id      TEXT NOT NULL,
    code_hash      TEXT NOT NULL UNIQUE,
    created_by_uid TEXT NOT NULL,
    expires_at     INTEGER NOT NULL,
    max_uses       INTEGER NOT NULL CHECK (max_uses BETWEEN 1 AND 1000),
    use_count      INTEGER NOT NULL CHECK (use_count BETWEEN 0 AND max_uses),
    created_at     INTEGER NOT NULL,
    revoked_at     INTEGER NULL
) STRICT;
CREATE INDEX invites_by_server ON invites (server_id, created_at);
