//! Per-device mailboxes (Welcomes and key envelopes, ordered by a sequence number, capped in
//! count and bytes, 30 days at most) and per-user encrypted backups with versions.

use serde::Serialize;

use super::super::{Actor, Community, Outcome};
use super::Mailbox;
use crate::domain::error::DomainError;
use crate::domain::keys::*;
use crate::domain::model::Millis;
use crate::domain::records::Record;

/// An envelope to send (`POST /v1/keys/envelopes`), its blob checked as base64url.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeIn {
    pub target_device_id: String,
    pub channel_id: String,
    pub epoch: u64,
    pub blob: String,
}

/// What a device's mailbox read may return: items after `after`, from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxPage {
    pub device_id: String,
    pub after: i64,
}

#[derive(Serialize)]
struct Available<'a> {
    device_id: &'a str,
    seq: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sent {
    pub sent: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deleted {
    pub deleted: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupVersion {
    pub version: i64,
}

impl Mailbox {
    /// Drops what is past its time.
    pub(super) fn expire(&mut self, now: Millis) {
        while let Some(first) = self.items.front() {
            if first.created_at + MAILBOX_TTL_MS > now {
                break;
            }
            self.bytes -= first.bytes;
            self.items.pop_front();
        }
    }

    fn has_room(&self, bytes: usize) -> bool {
        self.items.len() < MAX_MAILBOX_ITEMS && self.bytes + bytes <= MAX_MAILBOX_BYTES
    }
}

impl Community {
    /// Queues an item for `device_id`; `None` (nothing queued) when its mailbox is full.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mailbox_push(
        &mut self,
        device_id: &str,
        kind: MailboxKind,
        channel_id: &str,
        epoch: u64,
        blob: &str,
        sender_device_id: &str,
        now: Millis,
        records: &mut Vec<Record>,
    ) -> Option<i64> {
        let mailbox = self.keys.mailboxes.entry(device_id.to_owned()).or_default();
        mailbox.expire(now);
        if !mailbox.has_room(blob.len()) {
            return None;
        }
        let seq = mailbox.next_seq.max(1);
        mailbox.next_seq = seq + 1;
        mailbox.bytes += blob.len();
        mailbox.items.push_back(MailboxIndex {
            seq,
            bytes: blob.len(),
            created_at: now,
        });
        records.push(Record::MailboxItem(MailboxItem {
            device_id: device_id.to_owned(),
            seq,
            kind,
            channel_id: channel_id.to_owned(),
            epoch,
            blob: blob.to_owned(),
            sender_device_id: sender_device_id.to_owned(),
            created_at: now,
        }));
        Some(seq)
    }

    /// `POST /v1/keys/envelopes`: each target must be an active device of a user who was in
    /// the channel's group in that epoch (403 `epoch_not_eligible`), and each target mailbox
    /// must have room (507); all or nothing. The sender must be able to read the channel.
    pub fn send_envelopes(
        &mut self,
        actor: &Actor,
        envelopes: Vec<EnvelopeIn>,
        now: Millis,
    ) -> Result<Outcome<Sent>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.active_device_key(actor)?;
        if envelopes.len() > MAX_ENVELOPES_PER_REQUEST {
            return Err(DomainError::Keys(KeyError::TooManyItems {
                max: MAX_ENVELOPES_PER_REQUEST,
            }));
        }
        let mut room: std::collections::HashMap<&str, (usize, usize)> = Default::default();
        for e in &envelopes {
            let channel = self.e2ee_channel(actor, &e.channel_id)?;
            let target = self
                .sessions
                .devices
                .get(&e.target_device_id)
                .filter(|d| d.revoked_at.is_none());
            let eligible = target.is_some_and(|d| {
                self.was_in_epoch(&e.channel_id, &d.user_uid, e.epoch)
                    && self.may_view(&channel, Some(&d.user_uid))
            });
            if !eligible || !self.was_in_epoch(&e.channel_id, &actor.user_uid, e.epoch) {
                return Err(DomainError::Keys(KeyError::EpochNotEligible));
            }
            // What is past its time goes first (whether or not this request is taken), so the
            // mailbox's own count and bytes are what is live.
            if let Some(m) = self.keys.mailboxes.get_mut(&e.target_device_id) {
                m.expire(now);
            }
            let (count, bytes) = room.entry(e.target_device_id.as_str()).or_insert_with(|| {
                self.keys
                    .mailboxes
                    .get(&e.target_device_id)
                    .map_or((0, 0), |m| (m.items.len(), m.bytes))
            });
            *count += 1;
            *bytes += e.blob.len();
            if *count > MAX_MAILBOX_ITEMS || *bytes > MAX_MAILBOX_BYTES {
                return Err(DomainError::Keys(KeyError::MailboxFull));
            }
        }
        let mut records = Vec::new();
        let mut events = Vec::new();
        let sent = envelopes.len();
        for e in envelopes {
            let Some(seq) = self.mailbox_push(
                &e.target_device_id,
                MailboxKind::Envelope,
                &e.channel_id,
                e.epoch,
                &e.blob,
                &actor.device_id,
                now,
                &mut records,
            ) else {
                return Err(DomainError::Keys(KeyError::MailboxFull));
            };
            if let Some(uid) = self
                .sessions
                .devices
                .get(&e.target_device_id)
                .map(|d| d.user_uid.to_string())
            {
                events.extend(self.user_events(
                    &uid,
                    "keys.mailbox.available",
                    &Available {
                        device_id: &e.target_device_id,
                        seq,
                    },
                    now,
                ));
            }
        }
        Ok(Outcome::published(Sent { sent }, records, events))
    }

    /// `GET /v1/keys/mailbox`: the asker's own device's mailbox (storage reads the items).
    pub fn mailbox_of(&self, actor: &Actor) -> Result<String, DomainError> {
        self.active_device_key(actor)?;
        Ok(actor.device_id.clone())
    }

    /// `POST /v1/keys/mailbox:ack {up_to_seq}`: deletes the device's items up to the seq.
    pub fn ack_mailbox(
        &mut self,
        actor: &Actor,
        up_to_seq: i64,
        now: Millis,
    ) -> Result<Outcome<Deleted>, DomainError> {
        self.active_device_key(actor)?;
        let Some(mailbox) = self.keys.mailboxes.get_mut(&actor.device_id) else {
            return Ok(Outcome::pure(Deleted { deleted: 0 }));
        };
        mailbox.expire(now);
        let mut deleted = 0;
        while let Some(first) = mailbox.items.front() {
            if first.seq > up_to_seq {
                break;
            }
            mailbox.bytes -= first.bytes;
            mailbox.items.pop_front();
            deleted += 1;
        }
        let records = vec![Record::MailboxAcked {
            device_id: actor.device_id.clone(),
            up_to_seq,
        }];
        Ok(Outcome::stored(Deleted { deleted }, records))
    }

    /// `PUT /v1/keys/backup` with `If-Match` (the version read; none or 0: there must be no
    /// backup yet): stores the user's one opaque backup, the version one higher.
    pub fn put_backup(
        &mut self,
        actor: &Actor,
        ciphertext: String,
        kdf_metadata: String,
        if_match: Option<i64>,
        now: Millis,
    ) -> Result<Outcome<BackupVersion>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.active_device_key(actor)?;
        let current = self.keys.backups.get(actor.user_uid.as_str()).copied();
        if if_match.unwrap_or(0) != current.unwrap_or(0) {
            return Err(DomainError::Keys(KeyError::BackupConflict {
                current_version: current.unwrap_or(0),
            }));
        }
        let version = current.unwrap_or(0) + 1;
        self.keys
            .backups
            .insert(actor.user_uid.to_string(), version);
        let record = Record::Backup(Backup {
            user_uid: actor.user_uid.to_string(),
            version,
            ciphertext,
            kdf_metadata,
            updated_at: now,
        });
        Ok(Outcome::stored(BackupVersion { version }, vec![record]))
    }
}
