-- Instance-wide key/value settings (instance id, signing key ids, schema facts).
-- One row per key; writers either overwrite (PutMeta) or race to be first (InsertMetaIfAbsent).
-- SQLite has no timestamp type: updated_at is RFC 3339 UTC text with milliseconds, which sorts
-- lexically in time order.
CREATE TABLE instance_meta (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
