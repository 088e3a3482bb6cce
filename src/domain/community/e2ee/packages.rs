//! Key packages: uploads (validated by `crate::mls` before they get here), claims that hand
//! each one-time package out once, ever, and the last-resort package only when none is left.
//!
//! "Once, ever" holds because the sequencer decides every claim in order against the one
//! in-memory index, and a claimed package leaves the index in the same step that records the
//! claim; storage marks the row claimed in the claim's own transaction, and a package is never
//! put back (a re-upload of a known ref is a no-op).

use serde::Serialize;

use super::super::{Actor, Community, Outcome};
use crate::domain::error::DomainError;
use crate::domain::keys::*;
use crate::domain::model::Millis;
use crate::domain::records::Record;

/// The answer to an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadOut {
    /// Packages stored by this upload (re-uploads are not counted).
    pub accepted: usize,
    pub one_time: usize,
    pub last_resort: bool,
}

/// A claimed package, without its data (storage has it, by ref).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedPackage {
    pub user_uid: String,
    pub device_id: String,
    pub key_package_ref: String,
    pub last_resort: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageCount {
    pub device_id: String,
    pub one_time: usize,
    pub last_resort: bool,
}

#[derive(Serialize)]
struct PackagesLow<'a> {
    device_id: &'a str,
    one_time: usize,
}

impl Community {
    /// The identity key of the asker's device, when it is active: what its packages and leaves
    /// must be signed with.
    pub fn active_device_key(&self, actor: &Actor) -> Result<String, DomainError> {
        match self.sessions.devices.get(&actor.device_id) {
            Some(d) if d.revoked_at.is_none() && d.user_uid == actor.user_uid => {
                Ok(d.public_key.clone())
            }
            _ => Err(DomainError::Keys(KeyError::NotYourDevice)),
        }
    }

    /// `POST /v1/keys/packages`: stores the asker's device's validated packages. At most
    /// [`MAX_ONE_TIME_PACKAGES`] one-time packages wait at once (all or nothing); a new
    /// last-resort package replaces the old one.
    pub fn upload_packages(
        &mut self,
        actor: &Actor,
        packages: Vec<KeyPackageRow>,
        now: Millis,
    ) -> Result<Outcome<UploadOut>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.active_device_key(actor)?;
        if packages.len() > MAX_PACKAGES_PER_UPLOAD {
            return Err(DomainError::Keys(KeyError::TooManyItems {
                max: MAX_PACKAGES_PER_UPLOAD,
            }));
        }
        let mut fresh: Vec<KeyPackageRow> = Vec::new();
        for p in packages {
            if p.device_id != actor.device_id {
                return Err(DomainError::Keys(KeyError::NotYourDevice));
            }
            if !self.keys.known_refs.contains_key(&p.key_package_ref)
                && !fresh.iter().any(|f| f.key_package_ref == p.key_package_ref)
            {
                fresh.push(p);
            }
        }
        let waiting = self
            .keys
            .packages
            .get(&actor.device_id)
            .map_or(0, |d| d.one_time.len());
        let new_one_time = fresh.iter().filter(|p| !p.last_resort).count();
        if waiting + new_one_time > MAX_ONE_TIME_PACKAGES {
            return Err(DomainError::Keys(KeyError::TooManyPackages));
        }
        // Of several last-resort packages in one upload, the last one stays.
        let last_resort = fresh.iter().rposition(|p| p.last_resort);
        let mut records = Vec::new();
        let accepted = fresh.len();
        self.keys
            .enrolled
            .entry(actor.user_uid.to_string())
            .or_default()
            .insert(actor.device_id.clone());
        let device = self
            .keys
            .packages
            .entry(actor.device_id.clone())
            .or_default();
        for (i, p) in fresh.into_iter().enumerate() {
            self.keys
                .known_refs
                .insert(p.key_package_ref.clone(), p.not_after);
            if p.last_resort {
                if Some(i) != last_resort {
                    continue;
                }
                if let Some(old) = device.last_resort.replace(p.key_package_ref.clone()) {
                    records.push(Record::KeyPackageDeleted {
                        key_package_ref: old,
                    });
                }
            } else {
                device.one_time.push_back(p.key_package_ref.clone());
            }
            records.push(Record::KeyPackage(p));
        }
        let out = UploadOut {
            accepted,
            one_time: device.one_time.len(),
            last_resort: device.last_resort.is_some(),
        };
        Ok(Outcome::stored(out, records))
    }

    /// `POST /v1/keys/packages:claim`: one package per enrolled, active device of each user
    /// (sharing a server with the asker: nobody drains the packages of strangers). A one-time
    /// package goes once; the last-resort one only when none is left. Each claim is recorded.
    pub fn claim_packages(
        &mut self,
        actor: &Actor,
        user_uids: &[String],
        now: Millis,
    ) -> Result<Outcome<Vec<ClaimedPackage>>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.active_device_key(actor)?;
        if user_uids.len() > MAX_CLAIM_USERS {
            return Err(DomainError::Keys(KeyError::TooManyItems {
                max: MAX_CLAIM_USERS,
            }));
        }
        let mut wanted: Vec<&str> = user_uids.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut records = Vec::new();
        let mut claimed = Vec::new();
        let mut events = Vec::new();
        for uid in wanted {
            if !self.shares_a_server(&actor.user_uid, uid) {
                continue;
            }
            // Sorted: the index is a BTreeSet.
            let devices: Vec<String> = self.enrolled_devices(uid).cloned().collect();
            for device_id in devices {
                let keys = &mut self.keys;
                let Some(packages) = keys.packages.get_mut(&device_id) else {
                    continue;
                };
                // Expired packages are passed over (the sweep deletes them).
                let mut one_time = None;
                while let Some(r) = packages.one_time.pop_front() {
                    if keys.known_refs.get(&r).is_some_and(|&end| end > now) {
                        one_time = Some(r);
                        break;
                    }
                }
                let last = packages
                    .last_resort
                    .clone()
                    .filter(|r| keys.known_refs.get(r).is_some_and(|&end| end > now));
                let (key_package_ref, last_resort) = match (one_time, last) {
                    (Some(r), _) => (r, false),
                    (None, Some(r)) => (r, true),
                    (None, None) => continue,
                };
                let remaining = packages.one_time.len();
                let claim = Claim {
                    claim_id: self.entropy.id("kpc"),
                    key_package_ref: key_package_ref.clone(),
                    device_id: device_id.clone(),
                    claimer_uid: actor.user_uid.to_string(),
                    claimer_device_id: actor.device_id.clone(),
                    last_resort,
                    claimed_at: now,
                };
                records.push(Record::KeyPackageClaim(claim));
                let entry = self.keys.claims.entry(key_package_ref.clone()).or_default();
                entry.device_id = device_id.clone();
                entry.claimers.insert(actor.device_id.clone());
                if remaining < LOW_PACKAGES && !last_resort {
                    events.extend(self.user_events(
                        uid,
                        "keys.packages.low",
                        &PackagesLow {
                            device_id: &device_id,
                            one_time: remaining,
                        },
                        now,
                    ));
                }
                claimed.push(ClaimedPackage {
                    user_uid: uid.to_owned(),
                    device_id,
                    key_package_ref,
                    last_resort,
                });
            }
        }
        Ok(Outcome::published(claimed, records, events))
    }

    /// `GET /v1/keys/packages/count`: per active device of the asker.
    pub fn package_counts(&self, actor: &Actor) -> Vec<PackageCount> {
        let mut counts: Vec<PackageCount> = self
            .sessions
            .devices
            .values()
            .filter(|d| d.user_uid == actor.user_uid && d.revoked_at.is_none())
            .map(|d| {
                let p = self.keys.packages.get(&d.device_id);
                PackageCount {
                    device_id: d.device_id.clone(),
                    one_time: p.map_or(0, |p| p.one_time.len()),
                    last_resort: p.is_some_and(|p| p.last_resort.is_some()),
                }
            })
            .collect();
        counts.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        counts
    }

    /// Whether two users are current members of one server (or are the same user).
    pub(super) fn shares_a_server(&self, a: &str, b: &str) -> bool {
        a == b
            || self.roster.user_servers.get(a).is_some_and(|servers| {
                servers.iter().any(|s| {
                    self.roster.current_role(s, a).is_some()
                        && self.roster.current_role(s, b).is_some()
                })
            })
    }
}
