-- The community domain. Every table is written only by the storage bridge's group-commit
-- writer, applying the `Record`s of domain commands (`WriteOp::Apply`): idempotent upserts keyed
-- by the entity's id, or insert-if-absent for messages and events. There are no foreign keys:
-- the single domain authority guarantees integrity, and bulk inserts must not depend on order.
-- Times are unix milliseconds (UTC) in BIGINT; enums are stored as their wire spelling.

-- A community ("server"). Upserted on create, claim and settings changes.
CREATE TABLE servers (
    id             TEXT PRIMARY KEY,
    display_name   TEXT NOT NULL,
    description    TEXT NOT NULL,
    banner_preset  TEXT NOT NULL,
    discoverable   BOOLEAN NOT NULL,
    join_policy    TEXT NOT NULL,
    owner_uid      TEXT NULL,
    created_by_uid TEXT NULL,
    created_at     BIGINT NOT NULL,
    updated_by_uid TEXT NULL,
    updated_at     BIGINT NOT NULL,
    -- Highest event id handed out for this server (message events are counted here, not logged).
    last_event_id  BIGINT NOT NULL DEFAULT 0
);

-- A sidebar group of channels of one kind. Upserted on create/rename/reorder; deleted by
-- `Record::DeleteCategory`.
CREATE TABLE categories (
    id             TEXT PRIMARY KEY,
    server_id      TEXT NOT NULL,
    label          TEXT NOT NULL,
    kind           TEXT NOT NULL,
    position       BIGINT NOT NULL,
    created_by_uid TEXT NULL,
    created_at     BIGINT NOT NULL
);

-- A text or voice channel. Upserted on create/rename/move.
CREATE TABLE channels (
    id                 TEXT PRIMARY KEY,
    server_id          TEXT NOT NULL,
    category_id        TEXT NOT NULL,
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL,
    position           BIGINT NOT NULL,
    history_visibility TEXT NOT NULL,
    encryption         TEXT NOT NULL,
    created_by_uid     TEXT NULL,
    created_at         BIGINT NOT NULL
);

-- A uid's role in a server. `Record::Membership` replaces this row and all the uid's spans.
CREATE TABLE memberships (
    server_id TEXT NOT NULL,
    user_uid  TEXT NOT NULL,
    role      TEXT NOT NULL,
    PRIMARY KEY (server_id, user_uid)
);

-- One stretch of membership, in message-sequence terms (joined_seq < seq <= left_seq).
-- Written only together with its `memberships` row (deleted and re-inserted as a set).
CREATE TABLE membership_spans (
    server_id  TEXT NOT NULL,
    user_uid   TEXT NOT NULL,
    joined_seq BIGINT NOT NULL,
    joined_at  BIGINT NOT NULL,
    left_seq   BIGINT NULL,
    left_at    BIGINT NULL,
    PRIMARY KEY (server_id, user_uid, joined_seq)
);

-- A uid's instance-wide profile. Upserted when the user saves it.
CREATE TABLE profiles (
    user_uid         TEXT PRIMARY KEY,
    display_name     TEXT NOT NULL,
    avatar_mode      TEXT NOT NULL,
    avatar_preset_id TEXT NULL,
    avatar_asset_id  TEXT NULL,
    version          BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- An uploaded avatar image; the bytes live in the blob store under `blob`. Upserted on upload.
CREATE TABLE avatar_assets (
    id           TEXT PRIMARY KEY,
    owner_uid    TEXT NOT NULL,
    blob         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    width        BIGINT NOT NULL,
    height       BIGINT NOT NULL,
    bytes        BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);

-- Single-use server ownership claims, by sha256 of the token. Upserted when issued and when used.
CREATE TABLE claim_tokens (
    token_hash TEXT PRIMARY KEY,
    server_id  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT NULL
);

-- Device identity keys, bound to a uid. Upserted on first sign-in and on revocation.
CREATE TABLE devices (
    device_id  TEXT PRIMARY KEY,
    user_uid   TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT NULL
);

-- Bearer sessions, by sha256 of the token. Upserted on sign-in and on revocation.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_uid   TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NULL
);

-- How far each user has read each channel. Upserted on every read acknowledgement.
CREATE TABLE read_acks (
    user_uid   TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    acked_at   BIGINT NOT NULL,
    PRIMARY KEY (user_uid, channel_id)
);

-- Channel history in the instance-wide message order. Inserted (if absent) in bulk, one
-- multi-row statement per group commit; only `deleted_at` ever changes afterwards
-- (`Record::MessageDeleted`, which keeps the row). A message is plaintext (`body`) or an
-- end-to-end encrypted envelope (the five envelope columns), never both.
-- mentions and attachments are JSON arrays. `id` is `msg_<seq>` (see `domain::model::message_id`):
-- lookups go through the primary key, so `id` needs no index of its own.
CREATE TABLE messages (
    seq              BIGINT PRIMARY KEY,
    id               TEXT NOT NULL,
    channel_id       TEXT NOT NULL,
    server_id        TEXT NOT NULL,
    author_uid       TEXT NOT NULL,
    author_device_id TEXT NOT NULL,
    body             TEXT NULL,
    epoch_id         BIGINT NULL,
    ciphertext       TEXT NULL,
    nonce            TEXT NULL,
    aad              TEXT NULL,
    sender_device_id TEXT NULL,
    reply_to_id      TEXT NULL,
    mentions         TEXT NOT NULL,
    attachments      TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    deleted_at       BIGINT NULL,
    CONSTRAINT messages_plain_xor_envelope CHECK (
        (body IS NOT NULL AND ciphertext IS NULL AND epoch_id IS NULL AND nonce IS NULL
            AND aad IS NULL AND sender_device_id IS NULL)
        OR (body IS NULL AND ciphertext IS NOT NULL AND epoch_id IS NOT NULL
            AND nonce IS NOT NULL AND aad IS NOT NULL AND sender_device_id IS NOT NULL)
    )
);
CREATE INDEX messages_channel_seq ON messages (channel_id, seq);

-- Each server's log of events other than new messages (layout, settings, deletes, profiles),
-- as clients got them live. New-message events are numbered in the same sequence but only
-- counted (`servers.last_event_id`): writing each message twice would halve the write path. Inserted (if absent) in bulk like messages; never updated.
CREATE TABLE events (
    server_id  TEXT NOT NULL,
    event_id   BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (server_id, event_id)
);
