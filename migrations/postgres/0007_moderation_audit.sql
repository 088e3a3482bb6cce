-- The moderation audit (Part D): one row per role change and moderation act, in the order the
-- authority decided them (seq). Append-only, and the database holds it to that: no update, no
-- delete, no truncate, whatever the statement and whoever sends it.
CREATE TABLE moderation_audit (
    seq        BIGINT NOT NULL PRIMARY KEY CHECK (seq > 0),
    audit_id   TEXT NOT NULL UNIQUE,
    server_id  TEXT NOT NULL,
    case_id    TEXT NULL,
    actor_uid  TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX moderation_audit_by_server ON moderation_audit (server_id, seq);
CREATE FUNCTION moderation_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'moderation_audit is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER moderation_audit_no_update_or_delete BEFORE UPDATE OR DELETE ON moderation_audit
    FOR EACH ROW EXECUTE FUNCTION moderation_audit_append_only();
CREATE TRIGGER moderation_audit_no_truncate BEFORE TRUNCATE ON moderation_audit
    FOR EACH STATEMENT EXECUTE FUNCTION moderation_audit_append_only();
