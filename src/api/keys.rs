//! The MLS delivery service's endpoints (wire contract Part C): devices and linking, key
//! packages, commits and epochs, mailboxes, envelopes and backups.
//!
//! MLS framing is parsed and validated here (`crate::mls`), on the shard that took the request,
//! before the sequencer decides anything: the sequencer only gets checked facts, so the one
//! thread every command passes never runs MLS crypto. A commit is validated against the epoch
//! read just before; the sequencer's compare-and-set on that epoch makes a commit validated
//! against an epoch that has moved on lose with `epoch_conflict`.
//!
//! No blob (package, commit, Welcome, GroupInfo, ciphertext, envelope, backup) or link code is
//! ever put in a log line or an error message.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::identity::{query_param, require_actor};
use super::input::{json_body, path_id};
use super::profiles::if_match;
use super::servers::handler;
use super::{ApiError, json};
use crate::domain::community::commands::keys as commands;
use crate::domain::community::e2ee::{CommitFacts, EnvelopeIn};
use crate::domain::error::DomainError;
use crate::domain::ids::{ChannelId, UserUid};
use crate::domain::keys::*;
use crate::domain::model::Envelope;
use crate::mls::{self, MlsError};
use crate::storage::{KeysAnswer, KeysQuery};

/// Largest base64url MLS message the API decodes (a commit, Welcome or GroupInfo; the request
/// body as a whole is bounded by `MAX_JSON_BODY_BYTES` first).
const MAX_MLS_CHARS: usize = mls::MAX_HANDSHAKE_BYTES.div_ceil(3) * 4;
const MAX_KEY_PACKAGE_CHARS: usize = mls::MAX_KEY_PACKAGE_BYTES.div_ceil(3) * 4;

fn keys_error(e: KeyError) -> ApiError {
    ApiError::Domain(DomainError::Keys(e))
}

/// An MLS refusal as the API answers it.
fn mls_error(what: &'static str, e: MlsError) -> ApiError {
    keys_error(match e {
        MlsError::NotPublicMessage => KeyError::PrivateHandshake,
        MlsError::WrongEpoch {
            message_epoch,
            current_epoch,
        } => KeyError::EpochConflict {
            message_epoch,
            current_epoch,
        },
        other => KeyError::InvalidMls {
            what,
            reason: other.reason(),
        },
    })
}

fn blob(b64: &str, max_chars: usize) -> Result<Vec<u8>, ApiError> {
    crate::auth::decode_blob(b64, max_chars).map_err(|_| keys_error(KeyError::InvalidBlob))
}

fn hex(bytes: &[u8]) -> String {
    crate::auth::lower_hex(bytes)
}

fn now_secs() -> u64 {
    u64::try_from(crate::authority::now_millis() / 1000).unwrap_or(0)
}

fn identity_key(encoded: &str) -> Result<[u8; 32], ApiError> {
    let key = crate::auth::decode_public_key(encoded).map_err(|_| ApiError::Internal)?;
    Ok(key.to_bytes())
}

/// Checks an encrypted post's ciphertext: an MLS PrivateMessage application message of this
/// channel's group, of the epoch the envelope states (the sequencer checks the epoch rule).
pub fn check_envelope(channel_id: &str, envelope: &Envelope) -> Result<(), ApiError> {
    let bytes = blob(&envelope.ciphertext, MAX_MLS_CHARS)?;
    let message = mls::check_application(channel_id.as_bytes(), &bytes)
        .map_err(|e| mls_error("application message", e))?;
    if message.epoch != envelope.epoch {
        return Err(keys_error(KeyError::EpochMismatch {
            stated: envelope.epoch,
            actual: message.epoch,
        }));
    }
    Ok(())
}

// ----- devices and linking ---------------------------------------------------------------------

#[derive(Serialize)]
struct DeviceList {
    devices: Vec<crate::domain::community::e2ee::DeviceView>,
}

handler!(
    /// `GET /v1/users/{user_uid}/devices`.
    devices, ctx => {
        require_actor(ctx).await?;
        let uid: UserUid = path_id(ctx, "user_uid")?;
        let devices = ctx.app.authority.read(|c, _| Ok(c.devices_of(&uid)))?;
        json(200, &DeviceList { devices })
    }
);

handler!(
    /// `DELETE /v1/devices/{device_id}`: one of the asker's own devices.
    revoke_device, ctx => {
        let who = require_actor(ctx).await?;
        let device_id = ctx.params.get("device_id").filter(|d| crate::domain::text::is_valid_id(d))
            .ok_or_else(|| keys_error(KeyError::NotYourDevice))?.to_string();
        ctx.app.authority.command(commands::RevokeDevice { actor: who, device_id: device_id.clone() }).await?;
        json(200, &Revoked { device_id, status: "revoked" })
    }
);

#[derive(Serialize)]
struct Revoked {
    device_id: String,
    status: &'static str,
}

#[derive(Deserialize)]
struct LinkStartIn {
    user_uid: String,
    device_id: String,
    public_key: String,
}

handler!(
    /// `POST /v1/devices/link/start {user_uid, device_id, public_key}` (no session).
    link_start, ctx => {
        let body: LinkStartIn = json_body(ctx)?;
        for (field, id) in [("user_uid", &body.user_uid), ("device_id", &body.device_id)] {
            if !crate::domain::text::is_valid_id(id) {
                return Err(ApiError::bad_request("invalid_id", format!("{field} is not a valid id")));
            }
        }
        let key = crate::auth::decode_public_key(&body.public_key)
            .map_err(|e| ApiError::bad_request(e.code(), "public_key must be base64url of an Ed25519 key"))?;
        let started = ctx.app.authority.command(commands::StartLink {
            user_uid: body.user_uid,
            device_id: body.device_id,
            public_key: crate::auth::encode_public_key(&key),
        }).await?;
        json(201, &started)
    }
);

#[derive(Deserialize)]
struct LinkConfirmIn {
    request_id: String,
    link_code: String,
}

handler!(
    /// `POST /v1/devices/link/confirm {request_id, link_code}` from a device of that user.
    link_confirm, ctx => {
        let who = require_actor(ctx).await?;
        let body: LinkConfirmIn = json_body(ctx)?;
        if body.request_id.len() > 64 || body.link_code.len() > 16 {
            return Err(keys_error(KeyError::LinkInvalid));
        }
        let state = ctx.app.authority.command(commands::ConfirmLink {
            actor: who,
            request_id: body.request_id,
            link_code: body.link_code,
        }).await?;
        json(200, &state)
    }
);

handler!(
    /// `GET /v1/devices/link/{request_id}` (no session: the id is the new device's secret).
    link_status, ctx => {
        let request_id = ctx.params.get("request_id").map(|r| r.to_string()).unwrap_or_default();
        let state = ctx.app.authority.read(|c, now| c.link_state(&request_id, now))?;
        json(200, &state)
    }
);

// ----- key packages ----------------------------------------------------------------------------

#[derive(Deserialize)]
struct PackageIn {
    data: String,
    #[serde(default)]
    last_resort: bool,
}

#[derive(Deserialize)]
struct PackagesIn {
    packages: Vec<PackageIn>,
}

handler!(
    /// `POST /v1/keys/packages {packages: [{data, last_resort}]}`: each a real KeyPackage of
    /// the asker's device, validated before it is stored.
    upload_packages, ctx => {
        let who = require_actor(ctx).await?;
        let body: PackagesIn = json_body(ctx)?;
        if body.packages.len() > MAX_PACKAGES_PER_UPLOAD {
            return Err(keys_error(KeyError::TooManyItems { max: MAX_PACKAGES_PER_UPLOAD }));
        }
        let encoded_key = ctx.app.authority.read(|c, _| c.active_device_key(&who))?;
        let key = identity_key(&encoded_key)?;
        let now = crate::authority::now_millis();
        let mut rows = Vec::with_capacity(body.packages.len());
        for p in body.packages {
            let bytes = blob(&p.data, MAX_KEY_PACKAGE_CHARS)?;
            let valid = mls::validate_key_package(&bytes, &who.device_id, &key, now_secs())
                .map_err(|e| mls_error("key package", e))?;
            rows.push(KeyPackageRow {
                key_package_ref: hex(&valid.key_package_ref),
                device_id: who.device_id.clone(),
                user_uid: who.user_uid.to_string(),
                data: crate::auth::encode_blob(&bytes),
                last_resort: p.last_resort,
                uploaded_at: now,
                not_after: i64::try_from(valid.not_after).unwrap_or(i64::MAX / 1000).saturating_mul(1000),
            });
        }
        let out = ctx.app.authority.command(commands::UploadPackages { actor: who, packages: rows }).await?;
        json(201, &out)
    }
);

#[derive(Deserialize)]
struct ClaimIn {
    user_uids: Vec<String>,
}

#[derive(Serialize)]
struct ClaimedOut {
    user_uid: String,
    device_id: String,
    key_package_ref: String,
    data: String,
    last_resort: bool,
}

#[derive(Serialize)]
struct ClaimOut {
    packages: Vec<ClaimedOut>,
}

handler!(
    /// `POST /v1/keys/packages:claim {user_uids}`.
    claim_packages, ctx => {
        let who = require_actor(ctx).await?;
        let body: ClaimIn = json_body(ctx)?;
        if body.user_uids.len() > MAX_CLAIM_USERS {
            return Err(keys_error(KeyError::TooManyItems { max: MAX_CLAIM_USERS }));
        }
        let claimed = ctx.app.authority.command(commands::ClaimPackages { actor: who, user_uids: body.user_uids }).await?;
        let refs = claimed.iter().map(|c| c.key_package_ref.clone()).collect();
        let KeysAnswer::Packages(data) = ctx.app.storage.keys(KeysQuery::Packages(refs)).await? else {
            return Err(ApiError::Internal);
        };
        let data: std::collections::HashMap<String, String> = data.into_iter().collect();
        let packages = claimed.into_iter().filter_map(|c| {
            // A package claimed is never deleted before it is read, but a revocation may
            // have purged it in between: then that device gets nothing this time.
            let d = data.get(&c.key_package_ref)?.clone();
            Some(ClaimedOut { user_uid: c.user_uid, device_id: c.device_id, key_package_ref: c.key_package_ref, data: d, last_resort: c.last_resort })
        }).collect();
        json(200, &ClaimOut { packages })
    }
);

#[derive(Serialize)]
struct CountOut {
    devices: Vec<crate::domain::community::e2ee::PackageCount>,
}

handler!(
    /// `GET /v1/keys/packages/count`.
    package_count, ctx => {
        let who = require_actor(ctx).await?;
        let devices = ctx.app.authority.read(|c, _| Ok(c.package_counts(&who)))?;
        json(200, &CountOut { devices })
    }
);

// ----- epochs and commits ----------------------------------------------------------------------

handler!(
    /// `GET /v1/channels/{id}/epoch`.
    epoch, ctx => {
        let who = require_actor(ctx).await?;
        let channel_id: ChannelId = path_id(ctx, "channel_id")?;
        let out = ctx.app.authority.read(|c, _| c.epoch_of(&who, &channel_id))?;
        json(200, &out)
    }
);

#[derive(Deserialize)]
struct CommitIn {
    commit: String,
    welcome: Option<String>,
    group_info: String,
    /// The epoch-0 GroupInfo of the group's creator, with the first commit only.
    genesis_group_info: Option<String>,
}

handler!(
    /// `POST /v1/channels/{id}/commits {commit, welcome?, group_info, genesis_group_info?}`.
    commit, ctx => {
        let who = require_actor(ctx).await?;
        let channel_id: ChannelId = path_id(ctx, "channel_id")?;
        let body: CommitIn = json_body(ctx)?;
        let commit = blob(&body.commit, MAX_MLS_CHARS)?;
        let commit_hash = hex(&Sha256::digest(&commit));
        let check = ctx.app.authority.read(|c, _| c.group_check(&who, &channel_id))?;
        if let Some((hash, commit_id, epoch)) = &check.last_commit && *hash == commit_hash {
            // The accepted commit again: its answer, whatever else the bundle holds.
            return json(201, &crate::domain::community::e2ee::CommitOut {
                channel_id: channel_id.to_string(), epoch: *epoch, commit_id: commit_id.clone(),
            });
        }
        let welcome = body.welcome.as_deref().map(|w| blob(w, MAX_MLS_CHARS)).transpose()?;
        let group_info = blob(&body.group_info, MAX_MLS_CHARS)?;
        let current = match &check.group_info {
            Some(info) => Some(mls::GroupState {
                epoch: check.epoch,
                group_info: blob(info, usize::MAX)?,
                public_state: check.public_state.as_deref().map(|s| blob(s, usize::MAX)).transpose()?.unwrap_or_default(),
            }),
            None => None,
        };
        let genesis = match (&current, &body.genesis_group_info) {
            (None, Some(g)) => Some(blob(g, MAX_MLS_CHARS)?),
            (None, None) => return Err(keys_error(KeyError::GenesisRequired)),
            (Some(_), _) => None,
        };
        let checked = mls::check_commit(
            channel_id.as_bytes(),
            current.as_ref(),
            genesis.as_deref(),
            &commit,
            welcome.as_deref(),
            &group_info,
            now_secs(),
        );
        let accepted = match checked {
            Ok(accepted) => accepted,
            Err(e) => {
                // A refused bundle may be an older accepted commit sent again (its answer was
                // lost while others committed): its answer, so its sender merges it instead of
                // discarding it. Looked up only here, off the path of new commits.
                if check.epoch > 0 {
                    let found = ctx.app.storage.keys(KeysQuery::CommitByHash { channel_id: channel_id.to_string(), commit_hash }).await?;
                    if let KeysAnswer::Commits(rows) = found && let Some(row) = rows.into_iter().next() {
                        return json(201, &crate::domain::community::e2ee::CommitOut {
                            channel_id: channel_id.to_string(), epoch: row.epoch, commit_id: row.commit_id,
                        });
                    }
                }
                return Err(match e {
                    // Validated against the epoch read just now: the caller's commit is for another.
                    MlsError::WrongEpoch { message_epoch, .. } => keys_error(KeyError::EpochConflict { message_epoch, current_epoch: check.epoch }),
                    other => mls_error("commit", other),
                });
            }
        };
        if accepted.loaded_from == mls::StateSource::GroupInfo && current.as_ref().is_some_and(|c| !c.public_state.is_empty()) {
            // The kept state did not load (an openmls upgrade, a damaged row): checked against
            // the GroupInfo instead, which re-checks leaf lifetimes against the clock.
            tracing::warn!(channel_id = %channel_id, "the kept public group state was not usable; the commit was checked against the GroupInfo");
        }
        let leaves = accepted.members.iter().map(|leaf| {
            let device = String::from_utf8(leaf.identity.clone()).map_err(|_| keys_error(KeyError::InvalidMls { what: "commit", reason: "credential_not_utf8" }))?;
            Ok((device, crate::auth::encode_blob(&leaf.signature_key)))
        }).collect::<Result<Vec<_>, ApiError>>()?;
        let committer = String::from_utf8(accepted.committer).map_err(|_| keys_error(KeyError::NotInGroup))?;
        let facts = CommitFacts {
            channel_id: channel_id.to_string(),
            based_on_epoch: check.epoch,
            new_epoch: accepted.new_epoch,
            committer,
            leaves,
            welcome_refs: accepted.welcome_refs.iter().map(|r| hex(r)).collect(),
            welcome: welcome.map(|w| crate::auth::encode_blob(&w)),
            group_info: crate::auth::encode_blob(&accepted.state.group_info),
            public_state: crate::auth::encode_blob(&accepted.state.public_state),
            commit: crate::auth::encode_blob(&commit),
            commit_hash,
        };
        let out = ctx.app.authority.command(commands::AcceptCommit { actor: who, facts }).await?;
        json(201, &out)
    }
);

#[derive(Serialize)]
struct CommitItem {
    epoch: u64,
    commit: String,
    sender_device_id: String,
    created_at: String,
}

#[derive(Serialize)]
struct CommitLog {
    commits: Vec<CommitItem>,
}

handler!(
    /// `GET /v1/channels/{id}/commits?after_epoch=N&limit=`: the commits that created epochs
    /// N+1, N+2, ….
    commits, ctx => {
        let who = require_actor(ctx).await?;
        let channel_id: ChannelId = path_id(ctx, "channel_id")?;
        let after_epoch = number(ctx, "after_epoch", 0, u64::MAX)?;
        let limit = number(ctx, "limit", MAX_COMMITS_PAGE as u64, MAX_COMMITS_PAGE as u64)?.max(1) as usize;
        ctx.app.authority.read(|c, _| c.may_read_commits(&who, &channel_id))?;
        let KeysAnswer::Commits(rows) = ctx.app.storage.keys(KeysQuery::Commits { channel_id: channel_id.to_string(), after_epoch, limit }).await? else {
            return Err(ApiError::Internal);
        };
        let commits = rows.into_iter().map(|c| CommitItem {
            epoch: c.epoch,
            commit: c.commit,
            sender_device_id: c.sender_device_id,
            created_at: crate::domain::views::rfc3339(c.created_at),
        }).collect();
        json(200, &CommitLog { commits })
    }
);

/// A non-negative integer query parameter (absent: `default`), at most `max`.
fn number(
    ctx: &super::RequestCtx<'_>,
    name: &'static str,
    default: u64,
    max: u64,
) -> Result<u64, ApiError> {
    match query_param(ctx, name) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().ok().filter(|n| *n <= max).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("{name} must be an integer from 0 to {max}"),
            )
        }),
    }
}

// ----- mailbox, envelopes, backups ------------------------------------------------------------

#[derive(Deserialize)]
struct EnvelopeItemIn {
    target_device_id: String,
    channel_id: String,
    epoch: u64,
    blob: String,
}

#[derive(Deserialize)]
struct EnvelopesIn {
    envelopes: Vec<EnvelopeItemIn>,
}

handler!(
    /// `POST /v1/keys/envelopes {envelopes: [{target_device_id, channel_id, epoch, blob}]}`.
    envelopes, ctx => {
        let who = require_actor(ctx).await?;
        let body: EnvelopesIn = json_body(ctx)?;
        if body.envelopes.len() > MAX_ENVELOPES_PER_REQUEST {
            return Err(keys_error(KeyError::TooManyItems { max: MAX_ENVELOPES_PER_REQUEST }));
        }
        let mut envelopes = Vec::with_capacity(body.envelopes.len());
        for e in body.envelopes {
            if !crate::domain::text::is_valid_id(&e.target_device_id) || !crate::domain::text::is_valid_id(&e.channel_id) {
                return Err(keys_error(KeyError::EpochNotEligible));
            }
            let bytes = blob(&e.blob, MAX_ENVELOPE_CHARS)?;
            envelopes.push(EnvelopeIn {
                target_device_id: e.target_device_id,
                channel_id: e.channel_id,
                epoch: e.epoch,
                blob: crate::auth::encode_blob(&bytes),
            });
        }
        let sent = ctx.app.authority.command(commands::SendEnvelopes { actor: who, envelopes }).await?;
        json(201, &sent)
    }
);

#[derive(Serialize)]
struct MailboxItemOut {
    seq: i64,
    kind: MailboxKind,
    channel_id: String,
    epoch: u64,
    blob: String,
    sender_device_id: String,
    created_at: String,
}

#[derive(Serialize)]
struct MailboxOut {
    items: Vec<MailboxItemOut>,
    next_after: i64,
}

handler!(
    /// `GET /v1/keys/mailbox?after=seq&limit=`: the asker's device's items, oldest first.
    mailbox, ctx => {
        let who = require_actor(ctx).await?;
        let after = number(ctx, "after", 0, i64::MAX as u64)? as i64;
        let limit = number(ctx, "limit", MAX_MAILBOX_PAGE as u64, MAX_MAILBOX_PAGE as u64)?.max(1) as usize;
        let device_id = ctx.app.authority.read(|c, _| c.mailbox_of(&who))?;
        let now = crate::authority::now_millis();
        let KeysAnswer::Mailbox(rows) = ctx.app.storage.keys(KeysQuery::Mailbox { device_id, after, limit, now }).await? else {
            return Err(ApiError::Internal);
        };
        let next_after = rows.last().map_or(after, |r| r.seq);
        let items = rows.into_iter().map(|m| MailboxItemOut {
            seq: m.seq,
            kind: m.kind,
            channel_id: m.channel_id,
            epoch: m.epoch,
            blob: m.blob,
            sender_device_id: m.sender_device_id,
            created_at: crate::domain::views::rfc3339(m.created_at),
        }).collect();
        json(200, &MailboxOut { items, next_after })
    }
);

#[derive(Deserialize)]
struct AckIn {
    up_to_seq: i64,
}

handler!(
    /// `POST /v1/keys/mailbox:ack {up_to_seq}`.
    mailbox_ack, ctx => {
        let who = require_actor(ctx).await?;
        let body: AckIn = json_body(ctx)?;
        let deleted = ctx.app.authority.command(commands::AckMailbox { actor: who, up_to_seq: body.up_to_seq }).await?;
        json(200, &deleted)
    }
);

#[derive(Deserialize)]
struct BackupIn {
    ciphertext: String,
    kdf_metadata: String,
    version: Option<i64>,
}

#[derive(Serialize)]
struct BackupOut {
    version: i64,
    ciphertext: String,
    kdf_metadata: String,
    updated_at: String,
}

handler!(
    /// `PUT /v1/keys/backup {ciphertext, kdf_metadata}` with `If-Match: <version>`.
    put_backup, ctx => {
        let who = require_actor(ctx).await?;
        let body: BackupIn = json_body(ctx)?;
        let ciphertext = crate::auth::encode_blob(&blob(&body.ciphertext, MAX_BACKUP_CHARS)?);
        if body.kdf_metadata.len() > MAX_KDF_METADATA_CHARS {
            return Err(ApiError::bad_request("invalid_kdf_metadata", format!("kdf_metadata holds at most {MAX_KDF_METADATA_CHARS} bytes")));
        }
        crate::domain::limits::text_field("kdf_metadata", &body.kdf_metadata)?;
        let if_match = if_match(ctx)?.or(body.version);
        let out = ctx.app.authority.command(commands::PutBackup { actor: who, ciphertext, kdf_metadata: body.kdf_metadata, if_match }).await?;
        json(200, &out)
    }
);

handler!(
    /// `GET /v1/keys/backup`: the asker's latest backup (404 when none).
    get_backup, ctx => {
        let who = require_actor(ctx).await?;
        ctx.app.authority.read(|c, _| c.active_device_key(&who))?;
        let KeysAnswer::Backup(backup) = ctx.app.storage.keys(KeysQuery::Backup { user_uid: who.user_uid.to_string() }).await? else {
            return Err(ApiError::Internal);
        };
        let b = backup.ok_or(ApiError::NotFound)?;
        json(200, &BackupOut { version: b.version, ciphertext: b.ciphertext, kdf_metadata: b.kdf_metadata, updated_at: crate::domain::views::rfc3339(b.updated_at) })
    }
);
