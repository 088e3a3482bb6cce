-- Instance-wide key/value settings (instance id, signing key ids, schema facts).
-- One row per key; writers either overwrite (PutMeta) or race to be first (InsertMetaIfAbsent).
CREATE TABLE instance_meta (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
