-- The moderation audit (Part D): one row per role change and moderation act, in the order the
-- authority decided them (seq). Append-only, and the database holds it to that: no update, no
-- delete, whatever the statement and whoever sends it.
CREATE TABLE moderation_audit (
    seq        INTEGER NOT NULL PRIMARY KEY CHECK (seq > 0),
    audit_id   TEXT NOT NULL UNIQUE,
    server_id  TEXT NOT NULL,
    case_id    TEXT NULL,
    actor_uid  TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX moderation_audit_by_server ON moderation_audit (server_id, seq);
CREATE TRIGGER moderation_audit_no_update BEFORE UPDATE ON moderation_audit
BEGIN
    SELECT RAISE(ABORT, 'moderation_audit is append-only');
END;
CREATE TRIGGER moderation_audit_no_delete BEFORE DELETE ON moderation_audit
BEGIN
    SELECT RAISE(ABORT, 'moderation_audit is append-only');
END;
