-- Moderation measures the voice path enforces now (bans: no join ticket; timeouts: listen-only;
-- locks: no new join tickets for a channel). Upserted by the authority, keyed by what they act
-- on; lifting one keeps the row with active = false (an audit trail for the moderation issue).
CREATE TABLE moderation (
    server_id TEXT NOT NULL,
    kind      TEXT NOT NULL,
    target    TEXT NOT NULL,
    until     INTEGER NULL,
    active    INTEGER NOT NULL CHECK (active IN (0, 1)),
    by_uid    TEXT NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (server_id, kind, target)
) STRICT;
