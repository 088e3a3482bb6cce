//! A user's devices as the delivery service sees them: the list, revocation (no session, no
//! package handed out, the mailbox purged) and linking a new device with a single-use
//! ten-minute code confirmed from a device the user is signed in on.

use std::collections::HashMap;

use serde::Serialize;

use super::super::{Actor, Community, Notice, Outcome};
use crate::domain::error::DomainError;
use crate::domain::keys::*;
use crate::domain::model::{Device, Millis};
use crate::domain::records::Record;
use crate::domain::views;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    pub device_id: String,
    pub identity_key: String,
    /// `active` or `revoked`.
    pub status: &'static str,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkStarted {
    pub request_id: String,
    pub link_code: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkState {
    pub request_id: String,
    /// `pending`, `confirmed` or `expired`.
    pub state: &'static str,
}

#[derive(Debug, Clone)]
struct LinkRequest {
    user_uid: String,
    device_id: String,
    public_key: String,
    code: String,
    expires_at: Millis,
    attempts: u32,
    confirmed: bool,
}

/// Pending and recently settled link requests (in memory only: a restart voids them, and a
/// ten-minute code is simply asked for again).
#[derive(Debug, Default)]
pub struct Links {
    by_id: HashMap<String, LinkRequest>,
}

impl Links {
    pub(super) fn sweep(&mut self, now: Millis) {
        // Settled or expired requests stay answerable for one more TTL, then go.
        self.by_id.retain(|_, r| r.expires_at + LINK_TTL_MS > now);
    }
}

#[derive(Serialize)]
struct DeviceAdded<'a> {
    user_uid: &'a str,
    device_id: &'a str,
}

impl Community {
    /// `GET /v1/users/{user_uid}/devices`.
    pub fn devices_of(&self, user_uid: &str) -> Vec<DeviceView> {
        let mut devices: Vec<DeviceView> = self
            .sessions
            .devices
            .values()
            .filter(|d| d.user_uid == user_uid)
            .map(|d| DeviceView {
                device_id: d.device_id.clone(),
                identity_key: d.public_key.clone(),
                status: if d.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                },
                created_at: views::rfc3339(d.created_at),
            })
            .collect();
        devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        devices
    }

    /// Active devices of `uid`.
    pub(in crate::domain::community) fn active_devices(&self, uid: &str) -> usize {
        self.sessions
            .devices
            .values()
            .filter(|d| d.user_uid == uid && d.revoked_at.is_none())
            .count()
    }

    /// Refuses a new device of `uid` over `OPENCHAT_MAX_DEVICES_PER_USER`.
    pub(in crate::domain::community) fn check_device_limit(
        &self,
        uid: &str,
    ) -> Result<(), DomainError> {
        let max = self.settings().max_devices_per_user;
        if self.active_devices(uid) >= max {
            return Err(DomainError::Keys(KeyError::TooManyDevices { max }));
        }
        Ok(())
    }

    /// `DELETE /v1/devices/{device_id}`: one of the asker's own active devices.
    pub fn revoke_device(
        &mut self,
        actor: &Actor,
        device_id: &str,
        now: Millis,
    ) -> Result<Outcome<()>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        let device = match self.sessions.devices.get_mut(device_id) {
            Some(d) if d.user_uid == actor.user_uid && d.revoked_at.is_none() => d,
            _ => return Err(DomainError::Keys(KeyError::NotYourDevice)),
        };
        device.revoked_at = Some(now);
        let mut records = vec![Record::Device(device.clone())];
        let mut notices = Vec::new();
        let tokens: Vec<String> = self
            .sessions
            .by_token
            .iter()
            .filter(|(_, s)| s.device_id == device_id)
            .map(|(t, _)| t.clone())
            .collect();
        for hash in tokens {
            if let Some(mut s) = self.sessions.by_token.remove(&hash) {
                s.revoked_at = Some(now);
                notices.push(Notice::SessionRevoked {
                    token_hash: hash,
                    user_uid: s.user_uid.to_string(),
                    device_id: s.device_id.clone(),
                });
                records.push(Record::Session(s));
            }
        }
        self.tickets.void_device(&actor.user_uid, device_id, now);
        if let Some(devices) = self.keys.enrolled.get_mut(actor.user_uid.as_str()) {
            devices.remove(device_id);
        }
        self.keys.packages.remove(device_id);
        self.keys.mailboxes.remove(device_id);
        records.push(Record::DevicePurged {
            device_id: device_id.to_owned(),
        });
        Ok(Outcome {
            notices,
            ..Outcome::stored((), records)
        })
    }

    /// `POST /v1/devices/link/start` (no session): a request to add `device_id` with
    /// `public_key` to `user_uid`, and the code a signed-in device of that user must confirm.
    pub fn start_link(
        &mut self,
        user_uid: &str,
        device_id: &str,
        public_key: &str,
        now: Millis,
    ) -> Result<Outcome<LinkStarted>, DomainError> {
        self.limiter.check(&format!("link:{user_uid}"), now)?;
        self.keys.links.sweep(now);
        if self.sessions.devices.contains_key(device_id) {
            return Err(DomainError::KeyMismatch);
        }
        if self.active_devices(user_uid) == 0 {
            // Nothing could confirm it: the same answer as a used code.
            return Err(DomainError::Keys(KeyError::LinkInvalid));
        }
        self.check_device_limit(user_uid)?;
        if self.keys.links.by_id.len() >= MAX_PENDING_LINKS {
            return Err(DomainError::Keys(KeyError::LinksBusy));
        }
        let request_id = self.entropy.id("lnk");
        let code = format!(
            "{:08}",
            u64::from_le_bytes(self.entropy.bytes::<8>()) % 100_000_000
        );
        let expires_at = now + LINK_TTL_MS;
        self.keys.links.by_id.insert(
            request_id.clone(),
            LinkRequest {
                user_uid: user_uid.to_owned(),
                device_id: device_id.to_owned(),
                public_key: public_key.to_owned(),
                code: code.clone(),
                expires_at,
                attempts: 0,
                confirmed: false,
            },
        );
        Ok(Outcome::pure(LinkStarted {
            request_id,
            link_code: code,
            expires_at: views::rfc3339(expires_at),
        }))
    }

    /// `POST /v1/devices/link/confirm` from a signed-in device of the same user: binds the
    /// new device's key. A wrong code counts; [`MAX_LINK_ATTEMPTS`] of them void the request.
    pub fn confirm_link(
        &mut self,
        actor: &Actor,
        request_id: &str,
        code: &str,
        now: Millis,
    ) -> Result<Outcome<LinkState>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.active_device_key(actor)?;
        let invalid = || DomainError::Keys(KeyError::LinkInvalid);
        let request = self
            .keys
            .links
            .by_id
            .get_mut(request_id)
            .ok_or_else(invalid)?;
        if request.user_uid != actor.user_uid
            || request.confirmed
            || request.expires_at <= now
            || request.attempts >= MAX_LINK_ATTEMPTS
        {
            return Err(invalid());
        }
        if !crate::auth::constant_time_eq(request.code.as_bytes(), code.as_bytes()) {
            request.attempts += 1;
            return Err(invalid());
        }
        let (device_id, public_key) = (request.device_id.clone(), request.public_key.clone());
        if self.sessions.devices.contains_key(&device_id) {
            return Err(DomainError::KeyMismatch);
        }
        self.check_device_limit(&actor.user_uid)?;
        if let Some(request) = self.keys.links.by_id.get_mut(request_id) {
            request.confirmed = true;
        }
        let device = Device {
            device_id: device_id.clone(),
            user_uid: actor.user_uid.clone(),
            public_key,
            created_at: now,
            revoked_at: None,
        };
        self.sessions
            .devices
            .insert(device_id.clone(), device.clone());
        let events = self.user_events(
            &actor.user_uid,
            "keys.device.added",
            &DeviceAdded {
                user_uid: &actor.user_uid,
                device_id: &device_id,
            },
            now,
        );
        Ok(Outcome::published(
            LinkState {
                request_id: request_id.to_owned(),
                state: "confirmed",
            },
            vec![Record::Device(device)],
            events,
        ))
    }

    /// `GET /v1/devices/link/{request_id}` for the new device.
    pub fn link_state(&self, request_id: &str, now: Millis) -> Result<LinkState, DomainError> {
        let request = self
            .keys
            .links
            .by_id
            .get(request_id)
            .ok_or(DomainError::Keys(KeyError::LinkInvalid))?;
        let state = if request.confirmed {
            "confirmed"
        } else if request.expires_at <= now || request.attempts >= MAX_LINK_ATTEMPTS {
            "expired"
        } else {
            "pending"
        };
        Ok(LinkState {
            request_id: request_id.to_owned(),
            state,
        })
    }
}
