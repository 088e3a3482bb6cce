//! Epochs and commits of encrypted channels: exactly one commit per epoch (a compare-and-set
//! on the epoch the shard validated against), the member set after it equal to the
//! authoritative one, Welcomes only to the devices whose claimed packages they name, and the
//! epoch rule of encrypted posts.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::super::{Actor, Community, Outcome, Subject};
use super::{Group, member_list};
use crate::domain::error::{DomainError, What};
use crate::domain::keys::*;
use crate::domain::model::{Channel, Encryption, Envelope, Millis};
use crate::domain::records::Record;

/// `GET /v1/channels/{id}/epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EpochOut {
    pub channel_id: String,
    pub epoch: u64,
    pub rotation_required: bool,
    /// The authoritative member set.
    pub members: Vec<MemberDevices>,
}

/// What a shard needs to validate a commit bundle before the sequencer decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCheck {
    pub epoch: u64,
    /// base64url of the current GroupInfo (`None` before the first commit).
    pub group_info: Option<String>,
    /// base64url of the validated public group state (`None`: use the GroupInfo).
    pub public_state: Option<String>,
    /// The newest accepted commit's hash, id and epoch.
    pub last_commit: Option<(String, String, u64)>,
}

/// A commit bundle as `crate::mls::check_commit` found it, validated against `based_on_epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitFacts {
    pub channel_id: String,
    pub based_on_epoch: u64,
    pub new_epoch: u64,
    /// The committer's leaf identity (a device id).
    pub committer: String,
    /// Every leaf after the commit: (device id, its signature key as base64url).
    pub leaves: Vec<(String, String)>,
    /// Hex KeyPackageRefs the Welcome names.
    pub welcome_refs: Vec<String>,
    pub welcome: Option<String>,
    pub group_info: String,
    pub public_state: String,
    pub commit: String,
    pub commit_hash: String,
}

/// 201 to an accepted commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitOut {
    pub channel_id: String,
    pub epoch: u64,
    pub commit_id: String,
}

#[derive(Serialize)]
struct EpochCommitted<'a> {
    channel_id: &'a str,
    epoch: u64,
}

#[derive(Serialize)]
struct MailboxAvailable<'a> {
    device_id: &'a str,
    seq: i64,
}

impl Community {
    /// The encrypted channel `channel_id` as `actor` may see it.
    pub(super) fn e2ee_channel(
        &self,
        actor: &Actor,
        channel_id: &str,
    ) -> Result<Channel, DomainError> {
        let channel = self.directory.channel(channel_id)?;
        if self
            .current_role(&channel.server_id, &actor.user_uid)
            .is_none()
            || !self.may_view(channel, Some(&actor.user_uid))
        {
            return Err(DomainError::NotFound(What::Channel));
        }
        if channel.encryption != Encryption::E2ee {
            return Err(DomainError::Keys(KeyError::NotEncrypted));
        }
        Ok(channel.clone())
    }

    fn group(&self, channel_id: &str) -> Group {
        self.keys
            .groups
            .get(channel_id)
            .cloned()
            .unwrap_or_default()
    }

    fn rotation_required(&self, channel: &Channel, group: &Group) -> bool {
        let expected: BTreeSet<String> = self
            .expected_members(channel)
            .into_values()
            .flatten()
            .collect();
        group.group_info.is_none() || expected != group.members
    }

    /// `GET /v1/channels/{id}/epoch`.
    pub fn epoch_of(&self, actor: &Actor, channel_id: &str) -> Result<EpochOut, DomainError> {
        let channel = self.e2ee_channel(actor, channel_id)?;
        let group = self.group(channel_id);
        Ok(EpochOut {
            channel_id: channel_id.to_owned(),
            epoch: group.epoch,
            rotation_required: self.rotation_required(&channel, &group),
            members: member_list(&self.expected_members(&channel)),
        })
    }

    /// What `POST /v1/channels/{id}/commits` validates against (a read, before the command).
    pub fn group_check(&self, actor: &Actor, channel_id: &str) -> Result<GroupCheck, DomainError> {
        self.e2ee_channel(actor, channel_id)?;
        self.active_device_key(actor)?;
        let group = self.group(channel_id);
        Ok(GroupCheck {
            epoch: group.epoch,
            group_info: group.group_info,
            public_state: group.public_state,
            last_commit: group.last_commit,
        })
    }

    /// Whether `actor` may read the commit log of `channel_id` (its current readers may).
    pub fn may_read_commits(&self, actor: &Actor, channel_id: &str) -> Result<(), DomainError> {
        self.e2ee_channel(actor, channel_id).map(|_| ())
    }

    /// `POST /v1/channels/{id}/commits`: accepts the one commit of the group's current epoch.
    pub fn accept_commit(
        &mut self,
        actor: &Actor,
        facts: CommitFacts,
        now: Millis,
    ) -> Result<Outcome<CommitOut>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        let channel = self.e2ee_channel(actor, &facts.channel_id)?;
        let device_key = self.active_device_key(actor)?;
        let group = self.group(&facts.channel_id);
        if let Some((hash, commit_id, epoch)) = &group.last_commit
            && *hash == facts.commit_hash
        {
            // The accepted commit again (its answer was lost): the same answer.
            return Ok(Outcome::pure(CommitOut {
                channel_id: facts.channel_id,
                epoch: *epoch,
                commit_id: commit_id.clone(),
            }));
        }
        if facts.based_on_epoch != group.epoch || facts.new_epoch != group.epoch + 1 {
            return Err(DomainError::Keys(KeyError::EpochConflict {
                message_epoch: facts.based_on_epoch,
                current_epoch: group.epoch,
            }));
        }
        if facts.committer != actor.device_id {
            return Err(DomainError::Keys(KeyError::NotInGroup));
        }
        let expected = self.expected_members(&channel);
        let expected_devices: BTreeSet<String> = expected.values().flatten().cloned().collect();
        // The first commit may come from any member device; later ones from the group.
        let committer_ok = if group.group_info.is_none() {
            expected_devices.contains(&actor.device_id)
        } else {
            group.members.contains(&actor.device_id)
        };
        if !committer_ok {
            return Err(DomainError::Keys(KeyError::NotInGroup));
        }
        let leaves: BTreeSet<String> = facts.leaves.iter().map(|(d, _)| d.clone()).collect();
        if leaves.len() != facts.leaves.len() || leaves != expected_devices {
            return Err(DomainError::Keys(KeyError::MemberSetMismatch {
                expected: member_list(&expected),
            }));
        }
        for (device_id, key) in &facts.leaves {
            let known = if *device_id == actor.device_id {
                Some(&device_key)
            } else {
                self.sessions.devices.get(device_id).map(|d| &d.public_key)
            };
            if known != Some(key) {
                return Err(DomainError::Keys(KeyError::SignatureKeyMismatch));
            }
        }
        // The Welcome: every ref claimed by this device, each naming one new member, and
        // every new member named.
        let new_devices: BTreeSet<&String> = leaves.difference(&group.members).collect();
        let mut welcomed: BTreeMap<String, String> = BTreeMap::new();
        for r in &facts.welcome_refs {
            let Some(claim) = self.keys.claims.get(r) else {
                return Err(DomainError::Keys(KeyError::WelcomeNotClaimed));
            };
            if !claim.claimers.contains(&actor.device_id)
                || !new_devices.contains(&claim.device_id)
                || welcomed
                    .insert(claim.device_id.clone(), r.clone())
                    .is_some()
            {
                return Err(DomainError::Keys(KeyError::WelcomeNotClaimed));
            }
        }
        // Every device new to the group is welcomed but the committer's own leaf (new only in
        // the first commit, where the creator's genesis leaf enters the DS's view).
        if new_devices
            .iter()
            .any(|d| **d != actor.device_id && !welcomed.contains_key(*d))
        {
            return Err(DomainError::Keys(KeyError::WelcomeNotClaimed));
        }

        // Accepted: the epoch advances, and everything else in the same records.
        let commit_id = self.entropy.id("cmt");
        let mut records = Vec::new();
        let owner = |c: &Community, device: &str| {
            c.sessions
                .devices
                .get(device)
                .map(|d| d.user_uid.to_string())
        };
        let old_users: BTreeSet<String> = group
            .members
            .iter()
            .filter_map(|d| owner(self, d))
            .collect();
        let new_users: BTreeSet<String> = leaves.iter().filter_map(|d| owner(self, d)).collect();
        for uid in new_users.difference(&old_users) {
            let spans = self
                .keys
                .spans
                .entry((facts.channel_id.clone(), uid.clone()))
                .or_default();
            spans.push((facts.new_epoch, None));
            records.push(Record::EpochSpan(EpochSpan {
                channel_id: facts.channel_id.clone(),
                user_uid: uid.clone(),
                from_epoch: facts.new_epoch,
                to_epoch: None,
            }));
        }
        for uid in old_users.difference(&new_users) {
            if let Some(spans) = self
                .keys
                .spans
                .get_mut(&(facts.channel_id.clone(), uid.clone()))
                && let Some(last) = spans.last_mut()
                && last.1.is_none()
            {
                last.1 = Some(group.epoch);
                records.push(Record::EpochSpan(EpochSpan {
                    channel_id: facts.channel_id.clone(),
                    user_uid: uid.clone(),
                    from_epoch: last.0,
                    to_epoch: Some(group.epoch),
                }));
            }
        }
        records.push(Record::Group(GroupRow {
            channel_id: facts.channel_id.clone(),
            epoch: facts.new_epoch,
            group_info: Some(facts.group_info.clone()),
            public_state: Some(facts.public_state.clone()),
            updated_at: now,
        }));
        records.push(Record::Commit(CommitRow {
            channel_id: facts.channel_id.clone(),
            epoch: facts.new_epoch,
            commit_id: commit_id.clone(),
            sender_device_id: actor.device_id.clone(),
            commit: facts.commit.clone(),
            commit_hash: facts.commit_hash.clone(),
            members: super::super::encode(&leaves.iter().collect::<Vec<_>>()),
            created_at: now,
        }));
        let mut events = Vec::new();
        if let Some(welcome) = &facts.welcome {
            for (device_id, r) in &welcomed {
                self.keys.claims.remove(r);
                let item = self.mailbox_push(
                    device_id,
                    MailboxKind::Welcome,
                    &facts.channel_id,
                    facts.new_epoch,
                    welcome,
                    &actor.device_id,
                    now,
                    &mut records,
                );
                if let (Some(uid), Some(seq)) = (owner(self, device_id), item) {
                    events.extend(self.user_events(
                        &uid,
                        "keys.mailbox.available",
                        &MailboxAvailable { device_id, seq },
                        now,
                    ));
                }
            }
        }
        let g = self
            .keys
            .groups
            .entry(facts.channel_id.clone())
            .or_default();
        g.epoch = facts.new_epoch;
        g.group_info = Some(facts.group_info);
        g.public_state = Some(facts.public_state);
        g.members = leaves.clone();
        g.recent.push_back((facts.new_epoch, leaves));
        while g.recent.len() > EPOCH_GRACE as usize + 1 {
            g.recent.pop_front();
        }
        g.last_commit = Some((facts.commit_hash, commit_id.clone(), facts.new_epoch));
        let mut event = self.server_event(
            &mut records,
            &channel.server_id,
            "chat.epoch.committed",
            &EpochCommitted {
                channel_id: &facts.channel_id,
                epoch: facts.new_epoch,
            },
            now,
        );
        event.subject = Subject::Channel {
            channel_id: facts.channel_id.clone(),
        };
        event.audience = self.channel_audience(&channel);
        events.insert(0, event);
        Ok(Outcome::published(
            CommitOut {
                channel_id: facts.channel_id,
                epoch: facts.new_epoch,
                commit_id,
            },
            records,
            events,
        ))
    }

    /// The epoch rule of an encrypted post by `actor` in `channel` (the ciphertext's framing
    /// was checked against `envelope.epoch` before): no rotation pending, an epoch of
    /// `[current − EPOCH_GRACE, current]`, sent by the posting device, a member of that epoch.
    pub(in crate::domain::community) fn check_envelope(
        &self,
        actor: &Actor,
        channel: &Channel,
        envelope: &Envelope,
    ) -> Result<(), DomainError> {
        let group = self.group(&channel.id);
        if self.rotation_required(channel, &group) {
            return Err(DomainError::Keys(KeyError::RotationRequired {
                current_epoch: group.epoch,
            }));
        }
        if envelope.epoch > group.epoch || envelope.epoch + EPOCH_GRACE < group.epoch {
            return Err(DomainError::Keys(KeyError::EpochStale {
                current_epoch: group.epoch,
            }));
        }
        let member = group
            .members_at(envelope.epoch)
            .is_some_and(|m| m.contains(&actor.device_id));
        if envelope.sender_device_id != actor.device_id || !member {
            return Err(DomainError::Keys(KeyError::SenderNotInEpoch));
        }
        Ok(())
    }
}
