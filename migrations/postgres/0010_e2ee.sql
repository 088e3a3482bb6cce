-- End-to-end encrypted channels (wire contract Part C): the server is an MLS delivery service.
-- It keeps what it routes and orders, never plaintext or key material: KeyPackages as uploaded
-- (public), who claimed which, each group's epoch and public GroupInfo, the commit log, the
-- epoch spans of each user's membership, per-device mailboxes of Welcomes and key envelopes,
-- and one opaque encrypted backup per user. Blobs are base64url text, as on the wire.
-- Encrypted messages stay in `messages`: `epoch_id` holds the MLS epoch and `ciphertext` the
-- PrivateMessage; an MLS PrivateMessage carries its own nonce and AAD, so `nonce` and `aad` hold ''.
CREATE TABLE e2ee_key_packages (
    key_package_ref TEXT PRIMARY KEY,
    device_id       TEXT NOT NULL,
    user_uid        TEXT NOT NULL,
    data            TEXT NOT NULL,
    last_resort     BOOLEAN NOT NULL,
    uploaded_at     BIGINT NOT NULL,
    not_after       BIGINT NOT NULL,
    -- A one-time package is handed out once: set when it is, never cleared.
    claimed_at      BIGINT NULL
);
CREATE INDEX e2ee_key_packages_by_device ON e2ee_key_packages (device_id);
CREATE TABLE e2ee_claims (
    claim_id          TEXT PRIMARY KEY,
    key_package_ref   TEXT NOT NULL,
    device_id         TEXT NOT NULL,
    claimer_uid       TEXT NOT NULL,
    claimer_device_id TEXT NOT NULL,
    last_resort       BOOLEAN NOT NULL,
    claimed_at        BIGINT NOT NULL
);
CREATE INDEX e2ee_claims_by_ref ON e2ee_claims (key_package_ref);
CREATE TABLE e2ee_groups (
    channel_id TEXT PRIMARY KEY,
    epoch      BIGINT NOT NULL CHECK (epoch >= 0),
    group_info TEXT NULL,
    -- The delivery service's own validated public group state (crate::mls), to check the next
    -- commit against without re-validating the tree.
    public_state TEXT NULL,
    updated_at BIGINT NOT NULL
);
-- One commit per epoch, held by the key: `epoch` is the epoch the commit created.
CREATE TABLE e2ee_commits (
    channel_id       TEXT NOT NULL,
    epoch            BIGINT NOT NULL CHECK (epoch >= 1),
    commit_id        TEXT NOT NULL,
    sender_device_id TEXT NOT NULL,
    commit_blob      TEXT NOT NULL,
    commit_hash      TEXT NOT NULL,
    members          TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (channel_id, epoch)
);
CREATE INDEX e2ee_commits_by_hash ON e2ee_commits (channel_id, commit_hash);
-- The epochs a user's devices were in a group: from_epoch..=to_epoch (NULL: still in it).
CREATE TABLE e2ee_spans (
    channel_id TEXT NOT NULL,
    user_uid   TEXT NOT NULL,
    from_epoch BIGINT NOT NULL,
    to_epoch   BIGINT NULL,
    PRIMARY KEY (channel_id, user_uid, from_epoch)
);
CREATE TABLE e2ee_mailbox (
    device_id        TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('welcome', 'envelope')),
    channel_id       TEXT NOT NULL,
    epoch            BIGINT NOT NULL,
    blob             TEXT NOT NULL,
    sender_device_id TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE TABLE e2ee_backups (
    user_uid     TEXT PRIMARY KEY,
    version      BIGINT NOT NULL,
    ciphertext   TEXT NOT NULL,
    kdf_metadata TEXT NOT NULL,
    updated_at   BIGINT NOT NULL
);
