//! The MLS delivery service's state and rules (wire contract Part C): which devices take part
//! (`devices`), their key packages and who claimed them (`packages`), each encrypted channel's
//! epoch, public group state and member set (`groups`), and the per-device mailboxes and the
//! per-user backups (`mailbox`).
//!
//! The one membership rule of an encrypted channel lives here: a user reads an encrypted
//! message only if its devices were in the group in the message's epoch
//! ([`Community::epoch_visibility`]); history pages, cursors, replies, realtime and resume all
//! get it through the channel's read visibility (`access`). The authoritative member set is
//! derived, never stored: the enrolled, active devices of the users who may read the channel
//! now ([`Community::expected_members`]); a rotation is required whenever it differs from the
//! group's leaves, so a join, leave, kick, ban, link or revocation needs no hook of its own.
//!
//! MLS parsing and validation (`crate::mls`) runs before a command reaches the sequencer, on
//! the shard that took the request: the commands here get the checked facts.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use super::Subject;
use super::{Audience, Community, Emitted};
use crate::domain::keys::*;
use crate::domain::model::{Channel, Encryption, Millis};
use crate::domain::records::{Record, Visibility};

pub(super) mod devices;
mod groups;
pub mod mailbox;
mod packages;

pub use devices::{DeviceView, LinkStarted};
pub use groups::{CommitFacts, CommitOut, EpochOut, GroupCheck};
pub use mailbox::{EnvelopeIn, MailboxPage};
pub use packages::{ClaimedPackage, PackageCount, UploadOut};

/// The epochs `lo..=hi` (`hi = None`: still in the group) of one membership span.
type EpochRange = (u64, Option<u64>);

/// A device's packages still to hand out.
#[derive(Debug, Default)]
struct DevicePackages {
    one_time: VecDeque<String>,
    last_resort: Option<String>,
}

/// An encrypted channel's group as the delivery service keeps it.
#[derive(Debug, Default, Clone)]
struct Group {
    epoch: u64,
    group_info: Option<String>,
    public_state: Option<String>,
    /// Device ids in the group now.
    members: BTreeSet<String>,
    /// The member devices of the newest epochs (at most `EPOCH_GRACE + 1`), oldest first.
    recent: VecDeque<(u64, BTreeSet<String>)>,
    /// Hash, id and epoch of the newest accepted commit (a resubmission is answered again).
    last_commit: Option<(String, String, u64)>,
}

impl Group {
    fn members_at(&self, epoch: u64) -> Option<&BTreeSet<String>> {
        self.recent
            .iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, m)| m)
    }
}

#[derive(Debug, Default)]
struct ClaimEntry {
    device_id: String,
    claimers: HashSet<String>,
}

#[derive(Debug, Default)]
struct Mailbox {
    items: VecDeque<MailboxIndex>,
    bytes: usize,
    next_seq: i64,
}

/// Everything of Part C the community holds in memory (blobs stay in storage).
#[derive(Debug, Default)]
pub struct KeyStore {
    /// Devices that ever uploaded a key package (they take part in encrypted channels).
    /// by uid: the devices that ever uploaded a package (revoked ones leave).
    enrolled: HashMap<String, BTreeSet<String>>,
    packages: HashMap<String, DevicePackages>,
    /// Every stored package ref and the end of its lifetime: a re-upload, even of a claimed
    /// one, is a no-op; an expired package is handed out never and deleted by the sweep (it
    /// can never be uploaded again: validation refuses expired packages).
    known_refs: HashMap<String, Millis>,
    /// Claimed packages not yet named by a Welcome: whose they are and who claimed them (a
    /// Welcome may name only those its committer claimed).
    claims: HashMap<String, ClaimEntry>,
    groups: HashMap<String, Group>,
    /// Epoch spans by (channel, uid).
    spans: HashMap<(String, String), Vec<EpochRange>>,
    mailboxes: HashMap<String, Mailbox>,
    backups: HashMap<String, i64>,
    links: devices::Links,
}

impl KeyStore {
    pub fn new(snapshot: KeysSnapshot) -> KeyStore {
        let mut k = KeyStore::default();
        for p in snapshot.packages {
            k.enrolled
                .entry(p.user_uid.clone())
                .or_default()
                .insert(p.device_id.clone());
            k.known_refs.insert(p.key_package_ref.clone(), p.not_after);
            if p.claimed && !p.last_resort {
                continue;
            }
            let d = k.packages.entry(p.device_id).or_default();
            if p.last_resort {
                d.last_resort = Some(p.key_package_ref);
            } else {
                d.one_time.push_back(p.key_package_ref);
            }
        }
        for (r, device_id, claimer) in snapshot.claims {
            let entry = k.claims.entry(r).or_default();
            entry.device_id = device_id;
            entry.claimers.insert(claimer);
        }
        for g in snapshot.groups {
            k.groups.insert(
                g.channel_id.clone(),
                Group {
                    epoch: g.epoch,
                    group_info: g.group_info,
                    public_state: g.public_state,
                    ..Group::default()
                },
            );
        }
        let mut commits = snapshot.recent_commits;
        commits.sort_by_key(|c| (c.channel_id.clone(), c.epoch));
        for c in commits {
            let g = k.groups.entry(c.channel_id.clone()).or_default();
            let members: BTreeSet<String> = CommitRow::member_ids_of(&c.members)
                .unwrap_or_default()
                .into_iter()
                .collect();
            if c.epoch == g.epoch {
                g.members = members.clone();
                g.last_commit = Some((c.commit_hash, c.commit_id, c.epoch));
            }
            g.recent.push_back((c.epoch, members));
            while g.recent.len() > EPOCH_GRACE as usize + 1 {
                g.recent.pop_front();
            }
        }
        for s in snapshot.spans {
            k.spans
                .entry((s.channel_id, s.user_uid))
                .or_default()
                .push((s.from_epoch, s.to_epoch));
        }
        for spans in k.spans.values_mut() {
            spans.sort_unstable();
        }
        let mut mailbox = snapshot.mailbox;
        mailbox.sort_by_key(|(d, i)| (d.clone(), i.seq));
        for (device, item) in mailbox {
            let m = k.mailboxes.entry(device).or_default();
            m.bytes += item.bytes;
            m.next_seq = m.next_seq.max(item.seq + 1);
            m.items.push_back(item);
        }
        k.backups = snapshot.backups.into_iter().collect();
        k
    }

    /// Takes out what lives only in memory (pending link requests).
    pub(super) fn take_volatile(&mut self) -> devices::Links {
        std::mem::take(&mut self.links)
    }

    pub(super) fn restore_volatile(&mut self, links: devices::Links) {
        self.links = links;
    }

    pub(super) fn sweep(&mut self, now: Millis) {
        self.links.sweep(now);
    }
}

impl Community {
    /// What the sweep deletes of Part C, as records to commit: packages past their lifetime
    /// (claimed or not) and mailbox items past [`MAILBOX_TTL_MS`].
    pub fn purge_keys(&mut self, now: Millis) -> Vec<Record> {
        let keys = &mut self.keys;
        let expired: Vec<String> = keys
            .known_refs
            .iter()
            .filter(|(_, not_after)| **not_after <= now)
            .map(|(r, _)| r.clone())
            .collect();
        let mut records = Vec::new();
        for r in expired {
            keys.known_refs.remove(&r);
            keys.claims.remove(&r);
            for device in keys.packages.values_mut() {
                device.one_time.retain(|x| *x != r);
                if device.last_resort.as_deref() == Some(r.as_str()) {
                    device.last_resort = None;
                }
            }
            records.push(Record::KeyPackageDeleted { key_package_ref: r });
        }
        let mut any_expired = false;
        for mailbox in keys.mailboxes.values_mut() {
            let before = mailbox.items.len();
            mailbox.expire(now);
            any_expired |= mailbox.items.len() != before;
        }
        if any_expired {
            records.push(Record::MailboxExpired {
                before: now - MAILBOX_TTL_MS,
            });
        }
        records
    }
}

impl Community {
    /// The read rule of an encrypted channel for `uid`, on top of what the channel's history
    /// visibility allows (`seqs`): only the messages of the epochs its devices were in the
    /// group. Plaintext channels are left as they are.
    pub(super) fn epoch_visibility(
        &self,
        channel: &Channel,
        uid: Option<&str>,
        seqs: Visibility,
    ) -> Visibility {
        if channel.encryption != Encryption::E2ee {
            return seqs;
        }
        let epochs = uid
            .and_then(|uid| {
                self.keys
                    .spans
                    .get(&(channel.id.to_string(), uid.to_owned()))
            })
            .cloned()
            .unwrap_or_default();
        Visibility::Epochs {
            seqs: Box::new(seqs),
            epochs,
        }
    }

    /// Whether `uid` was in the group of `channel_id` in `epoch`.
    pub(super) fn was_in_epoch(&self, channel_id: &str, uid: &str, epoch: u64) -> bool {
        self.keys
            .spans
            .get(&(channel_id.to_owned(), uid.to_owned()))
            .is_some_and(|spans| {
                spans
                    .iter()
                    .any(|&(lo, hi)| epoch >= lo && hi.is_none_or(|hi| epoch <= hi))
            })
    }

    /// Who receives the live events of a message of `channel` (of MLS epoch `epoch` when it
    /// is encrypted): the channel's audience, and of an encrypted message only those of it who
    /// were in the group in that epoch.
    pub(super) fn message_audience(&self, channel: &Channel, epoch: Option<u64>) -> Audience {
        let Some(epoch) = epoch else {
            return self.channel_audience(channel);
        };
        let readers: Vec<String> = self
            .channel_readers(channel)
            .into_iter()
            .filter(|uid| self.was_in_epoch(&channel.id, uid, epoch))
            .collect();
        Audience::Users(readers)
    }

    /// The current members who may see `channel` (sorted).
    pub(super) fn channel_readers(&self, channel: &Channel) -> Vec<String> {
        let roles = match channel.access.view_min_role {
            None => crate::domain::model::Role::ALL.to_vec(),
            Some(min) => crate::domain::model::Role::at_least_all(min),
        };
        self.members_with(&channel.server_id, &roles)
    }

    /// The authoritative member set of an encrypted channel: the enrolled, active devices of
    /// every user who may read it now, by uid (users with no such device are left out).
    pub(super) fn expected_members(&self, channel: &Channel) -> BTreeMap<String, BTreeSet<String>> {
        let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for uid in self.channel_readers(channel) {
            let devices: BTreeSet<String> = self.enrolled_devices(&uid).cloned().collect();
            if !devices.is_empty() {
                members.insert(uid, devices);
            }
        }
        members
    }

    /// The enrolled, active devices of `uid`.
    pub(super) fn enrolled_devices<'a>(&'a self, uid: &'a str) -> impl Iterator<Item = &'a String> {
        self.keys
            .enrolled
            .get(uid)
            .into_iter()
            .flatten()
            .filter(move |d| {
                self.sessions
                    .devices
                    .get(d.as_str())
                    .is_some_and(|d| d.revoked_at.is_none() && d.user_uid == uid)
            })
    }

    /// Events for one user wherever it is a member (its sockets are per server): private,
    /// not logged. Each carries `device_id` when it is for one device.
    pub(super) fn user_events(
        &self,
        uid: &str,
        kind: &'static str,
        payload: &impl serde::Serialize,
        now: Millis,
    ) -> Vec<Emitted> {
        let payload = super::encode(payload);
        let mut servers: Vec<&str> = self
            .roster
            .user_servers
            .get(uid)
            .into_iter()
            .flatten()
            .filter(|s| self.roster.current_role(s, uid).is_some())
            .map(|s| s.as_str())
            .collect();
        servers.sort_unstable();
        servers
            .into_iter()
            .map(|server_id| Emitted {
                server_id: server_id.to_owned(),
                event_id: None,
                audience: Audience::User(uid.to_owned()),
                kind,
                payload: payload.clone(),
                created_at: now,
                subject: Subject::Server,
            })
            .collect()
    }
}

/// A member set as the wire shows it.
fn member_list(members: &BTreeMap<String, BTreeSet<String>>) -> Vec<MemberDevices> {
    members
        .iter()
        .map(|(uid, devices)| MemberDevices {
            user_uid: uid.clone(),
            device_ids: devices.iter().cloned().collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
