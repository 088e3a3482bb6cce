-- Moderation cases, the actions taken on them, each server's voting policy, proposals and their
-- votes (Part D). One vote per voter and proposal, held by the key.
CREATE TABLE moderation_cases (
    id           TEXT NOT NULL PRIMARY KEY,
    server_id    TEXT NOT NULL,
    reporter_uid TEXT NOT NULL,
    target_uid   TEXT NOT NULL,
    channel_id   TEXT NULL,
    message_id   TEXT NULL,
    reason_code  TEXT NOT NULL,
    reason_text  TEXT NULL,
    status       TEXT NOT NULL CHECK (status IN ('open', 'voting', 'enforced', 'rejected', 'closed')),
    created_at   INTEGER NOT NULL,
    closed_at    INTEGER NULL
) STRICT;
CREATE INDEX moderation_cases_by_server ON moderation_cases (server_id, created_at);
CREATE TABLE moderation_actions (
    id               TEXT NOT NULL PRIMARY KEY,
    case_id          TEXT NOT NULL,
    server_id        TEXT NOT NULL,
    action_type      TEXT NOT NULL,
    target_uid       TEXT NOT NULL,
    channel_id       TEXT NULL,
    duration_seconds INTEGER NULL,
    expires_at       INTEGER NULL,
    enforced_by_uid  TEXT NOT NULL,
    enforced_at      INTEGER NOT NULL
) STRICT;
CREATE TABLE moderation_policies (
    server_id      TEXT NOT NULL PRIMARY KEY,
    threshold      INTEGER NOT NULL CHECK (threshold >= 1),
    quorum         INTEGER NOT NULL CHECK (quorum >= threshold),
    window_seconds INTEGER NOT NULL CHECK (window_seconds > 0),
    updated_at     INTEGER NOT NULL
) STRICT;
CREATE TABLE moderation_proposals (
    id               TEXT NOT NULL PRIMARY KEY,
    case_id          TEXT NOT NULL,
    server_id        TEXT NOT NULL,
    action_type      TEXT NOT NULL,
    duration_seconds INTEGER NULL,
    proposed_by_uid  TEXT NOT NULL,
    threshold        INTEGER NOT NULL,
    quorum           INTEGER NOT NULL,
    window_seconds   INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('open', 'enforced', 'rejected', 'expired')),
    created_at       INTEGER NOT NULL,
    idempotency_key  TEXT NULL
) STRICT;
CREATE TABLE moderation_votes (
    proposal_id TEXT NOT NULL,
    voter_uid   TEXT NOT NULL,
    value       TEXT NOT NULL CHECK (value IN ('yes', 'no', 'abstain')),
    at          INTEGER NOT NULL,
    PRIMARY KEY (proposal_id, voter_uid)
) STRICT;
-- Evidence a reporter chose to disclose: sealed (XChaCha20-Poly1305, the key outside the
-- database), deleted 30 days after its case closes.
CREATE TABLE moderation_evidence (
    case_id    TEXT NOT NULL PRIMARY KEY,
    server_id  TEXT NOT NULL,
    sealed     TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
