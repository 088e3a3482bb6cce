//! Devices, sessions and identity bindings: signing in (the challenge is spent once, the uid is
//! decided by `crate::domain::identity`, the device is bound to its key), authenticating a
//! bearer token, revoking a session, approving a binding and the operator's key at start.

use std::collections::HashMap;

use super::{Actor, Community, Notice, Outcome, SESSION_TTL_MS, SignIn};
use crate::domain::error::{DomainError, What};
use crate::domain::model::{Device, Millis, Role, Session};
use crate::domain::records::Record;
use crate::domain::views::{self, SessionOut};

/// Devices by id, sessions by token hash, the answered challenges and the approved bindings.
#[derive(Debug, Default)]
pub struct Sessions {
    pub(super) devices: HashMap<String, Device>,
    pub(super) by_token: HashMap<String, Session>,
    /// Challenges already answered (challenges themselves are stateless: `crate::auth`).
    pub(super) used_challenges: crate::auth::challenge::UsedChallenges,
    /// Approved bindings of uids to keys other than their own.
    pub(super) bindings: crate::domain::identity::Bindings,
}

impl Community {
    /// `POST /v1/auth/session`: spends the challenge (single use, whether or not the signature
    /// checked out), decides the uid (`crate::domain::identity`), binds the device to the key on first
    /// use, and opens a session. The value holds the plaintext token.
    pub fn open_session(
        &mut self,
        sign_in: &SignIn,
        now: Millis,
    ) -> Result<Outcome<SessionOut>, DomainError> {
        use crate::auth::challenge::Consumed;
        if sign_in.challenge.expires_at <= now {
            return Err(DomainError::ChallengeInvalid);
        }
        match self
            .sessions
            .used_challenges
            .consume(&sign_in.challenge, now)
        {
            Ok(()) => {}
            Err(Consumed::Replayed) => return Err(DomainError::ChallengeInvalid),
            Err(Consumed::Full) => return Err(DomainError::SignInsThrottled),
        }
        if !sign_in.signature_valid {
            return Err(DomainError::SignatureMismatch);
        }
        let device_id = sign_in.device_id.as_str();
        let public_key = sign_in.public_key.as_str();
        let uid = self.sign_in_uid(
            device_id,
            &sign_in.derived_uid,
            sign_in.requested_uid.as_deref(),
            public_key,
        )?;
        let mut records = Vec::new();
        if !self.sessions.devices.contains_key(device_id) {
            self.check_device_limit(&uid)?;
            // Another key of the uid was refused above; a new device of the same key is the
            // same identity.
            let device = Device {
                device_id: device_id.to_owned(),
                user_uid: uid.clone().into(),
                public_key: public_key.to_owned(),
                created_at: now,
                revoked_at: None,
            };
            records.push(Record::Device(device.clone()));
            self.sessions.devices.insert(device_id.to_owned(), device);
        }
        let token = self.entropy.token("ocs_");
        let session = Session {
            token_hash: crate::auth::hash_token(&token),
            user_uid: uid.clone().into(),
            device_id: device_id.to_owned(),
            created_at: now,
            expires_at: now + SESSION_TTL_MS,
            revoked_at: None,
        };
        records.push(Record::Session(session.clone()));
        self.sessions
            .by_token
            .insert(session.token_hash.clone(), session);
        Ok(Outcome::stored(
            SessionOut {
                token,
                user_uid: uid,
                device_id: device_id.to_owned(),
                expires_at: views::rfc3339(now + SESSION_TTL_MS),
            },
            records,
        ))
    }

    /// The uid a sign-in of `public_key` on `device_id` gets, asking for `requested` (none:
    /// the key's own `derived` uid), or why it is refused: the uid decision of
    /// `crate::domain::identity`, and a known device keeps its uid and key and must not be
    /// revoked. Both entry points ask it (B.1's `/v1/auth/session` and A.10's verified
    /// sessions, also before handing out their challenge) and nothing else decides a uid.
    pub fn sign_in_uid(
        &self,
        device_id: &str,
        derived: &str,
        requested: Option<&str>,
        public_key: &str,
    ) -> Result<String, DomainError> {
        let uid = crate::domain::identity::sign_in_uid(
            derived,
            requested,
            public_key,
            requested.and_then(|u| self.sessions.bindings.get(u)),
            self.sessions.devices.values(),
        )?;
        match self.sessions.devices.get(device_id) {
            Some(d) if d.user_uid != uid || d.public_key != public_key => {
                Err(DomainError::KeyMismatch)
            }
            Some(d) if d.revoked_at.is_some() => Err(DomainError::DeviceRevoked),
            _ => Ok(uid),
        }
    }

    /// A verified session of wire contract A.10 (`POST /v1/servers/{id}/sessions`): the
    /// server must exist, then it is the same sign-in as B.1's (`open_session`).
    pub fn open_server_session(
        &mut self,
        server_id: &str,
        sign_in: &SignIn,
        now: Millis,
    ) -> Result<Outcome<SessionOut>, DomainError> {
        self.directory.server(server_id)?;
        self.open_session(sign_in, now)
    }

    /// What a verified-session challenge for `server_id` is issued to (A.10): the uid of
    /// [`Community::sign_in_uid`], asked before the challenge so a refused sign-in is told at
    /// once; the session asks again.
    pub fn server_session_uid(
        &self,
        server_id: &str,
        device_id: &str,
        derived: &str,
        requested: Option<&str>,
        public_key: &str,
    ) -> Result<String, DomainError> {
        self.directory.server(server_id)?;
        self.sign_in_uid(device_id, derived, requested, public_key)
    }

    /// The actor behind a bearer token, if the session is live.
    pub fn authenticate(&self, token: &str, now: Millis) -> Option<(Actor, Millis)> {
        let s = self
            .sessions
            .by_token
            .get(&crate::auth::hash_token(token))?;
        if s.revoked_at.is_some() || s.expires_at <= now {
            return None;
        }
        let device = self.sessions.devices.get(&s.device_id)?;
        if device.revoked_at.is_some() {
            return None;
        }
        Some((
            Actor {
                user_uid: s.user_uid.clone(),
                device_id: s.device_id.clone(),
            },
            s.expires_at,
        ))
    }

    /// `DELETE /v1/auth/session`.
    pub fn revoke_session(&mut self, token: &str, now: Millis) -> Result<Outcome<()>, DomainError> {
        let hash = crate::auth::hash_token(token);
        let Some(mut s) = self.sessions.by_token.remove(&hash) else {
            return Err(DomainError::NoSuchSession);
        };
        s.revoked_at = Some(now);
        // Its sockets close, its device's voice ends and its unused tickets stop working.
        self.tickets.void_device(&s.user_uid, &s.device_id, now);
        let notice = Notice::SessionRevoked {
            token_hash: hash,
            user_uid: s.user_uid.clone().into(),
            device_id: s.device_id.clone(),
        };
        Ok(Outcome {
            notices: vec![notice],
            ..Outcome::stored((), vec![Record::Session(s)])
        })
    }

    /// A session another node of the cluster revoked (its row is already in the shared
    /// database): forgotten here, its sockets closed and its unused tickets voided as a local
    /// revoke does. Nothing to store; nothing happens for a session this node does not know.
    pub fn forget_revoked_session(
        &mut self,
        token_hash: &str,
        now: Millis,
    ) -> Result<Outcome<()>, DomainError> {
        let Some(s) = self.sessions.by_token.remove(token_hash) else {
            return Ok(Outcome::pure(()));
        };
        self.tickets.void_device(&s.user_uid, &s.device_id, now);
        Ok(Outcome {
            notices: vec![Notice::SessionRevoked {
                token_hash: token_hash.to_owned(),
                user_uid: s.user_uid.clone().into(),
                device_id: s.device_id.clone(),
            }],
            ..Outcome::pure(())
        })
    }

    /// `POST /v1/servers/{id}/identity-bindings`: an owner or admin of the server approves
    /// that `public_key` may sign in as `user_uid`, a uid that was a member of the server (a
    /// headers-mode uid moving to sessions). See `crate::domain::identity` for who may approve what.
    pub fn approve_binding(
        &mut self,
        actor: &Actor,
        server_id: &str,
        user_uid: &str,
        public_key: &str,
        now: Millis,
    ) -> Result<Outcome<crate::domain::identity::BindingView>, DomainError> {
        use crate::domain::identity::{IdentityBinding, bound_elsewhere, may_approve};
        self.limiter.check(&actor.user_uid, now)?;
        self.directory.server(server_id)?;
        let Some(target) = self.roster.membership(server_id, user_uid) else {
            return Err(DomainError::NotFound(What::AnyMembership));
        };
        let target_role = target.is_current().then_some(target.role);
        let elsewhere: Vec<(Option<Role>, Role)> = self
            .roster
            .user_servers
            .get(user_uid)
            .into_iter()
            .flatten()
            .filter(|s| s.as_str() != server_id)
            .filter_map(|s| {
                let role = self.current_role(s, user_uid)?;
                role.at_least(Role::Admin)
                    .then(|| (self.current_role(s, &actor.user_uid), role))
            })
            .collect();
        may_approve(
            self.current_role(server_id, &actor.user_uid),
            target_role,
            elsewhere.into_iter(),
        )?;
        if bound_elsewhere(
            user_uid,
            public_key,
            self.sessions.bindings.get(user_uid),
            self.sessions.devices.values(),
        ) {
            return Err(DomainError::KeyMismatch);
        }
        let binding = match self.sessions.bindings.get(user_uid) {
            // Approved before for the same key: nothing new to record.
            Some(existing) => existing.clone(),
            None => IdentityBinding {
                user_uid: user_uid.to_owned(),
                public_key: public_key.to_owned(),
                server_id: server_id.to_owned(),
                approved_by_uid: actor.user_uid.clone().into(),
                approved_at: now,
            },
        };
        let records = if self.sessions.bindings.get(user_uid).is_some() {
            Vec::new()
        } else {
            self.sessions.bindings.insert(binding.clone());
            vec![Record::IdentityBinding(binding.clone())]
        };
        Ok(Outcome::stored(
            crate::domain::identity::BindingView::of(&binding),
            records,
        ))
    }

    /// At start, with `OPENCHAT_DEFAULT_SERVER_OWNER_KEY`: the operator's key is bound to the
    /// owner uid (when that uid is not the key's own), and devices that took the uid with
    /// another key lose it (their sessions stop authenticating), so the operator's word wins
    /// over whoever asked first.
    pub fn bind_owner_key(
        &mut self,
        owner_uid: &str,
        public_key: &str,
        now: Millis,
    ) -> Outcome<()> {
        use crate::domain::identity::{APPROVED_BY_CONFIGURATION, IdentityBinding};
        let mut records = Vec::new();
        let taken: Vec<String> = self
            .sessions
            .devices
            .values()
            .filter(|d| d.user_uid == owner_uid && d.revoked_at.is_none())
            .filter(|d| d.public_key != public_key)
            .map(|d| d.device_id.clone())
            .collect();
        for id in taken {
            let device = self.sessions.devices.get_mut(&id).expect("listed above");
            device.revoked_at = Some(now);
            records.push(Record::Device(device.clone()));
        }
        let derived = crate::auth::decode_public_key(public_key)
            .map(|k| crate::auth::derive_user_uid(&k))
            .ok();
        let current = self
            .sessions
            .bindings
            .get(owner_uid)
            .map(|b| b.public_key.as_str());
        if derived.as_deref() != Some(owner_uid) && current != Some(public_key) {
            let binding = IdentityBinding {
                user_uid: owner_uid.to_owned(),
                public_key: public_key.to_owned(),
                server_id: self.settings().default_server_id.clone(),
                approved_by_uid: APPROVED_BY_CONFIGURATION.to_owned(),
                approved_at: now,
            };
            records.push(Record::IdentityBinding(binding.clone()));
            self.sessions.bindings.insert(binding);
        }
        Outcome::stored((), records)
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::community::fixtures::*;
    use crate::domain::community::{Admission, CHALLENGE_TTL_MS, Community};
    use crate::domain::model::{Device, HistoryVisibility, Role};
    use crate::domain::records::{Record, Snapshot};
    use ed25519_dalek::SigningKey;

    #[test]
    fn sessions_spend_their_challenge_and_take_the_keys_uid() {
        let mut c = community(HistoryVisibility::Joined);
        let key = SigningKey::from_bytes(&[7u8; 32]);
        // A bad signature is refused, and the challenge is then spent.
        assert_eq!(
            c.open_session(&sign_in(&key, "dev_1", None, 1, 1_000, false), 1_001)
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            c.open_session(&sign_in(&key, "dev_1", None, 1, 1_000, true), 1_002)
                .unwrap_err()
                .status(),
            401,
            "replayed challenge"
        );
        let expired = c
            .open_session(
                &sign_in(&key, "dev_1", None, 2, 2_000, true),
                2_000 + CHALLENGE_TTL_MS,
            )
            .unwrap_err();
        assert_eq!(expired.status(), 401);
        let session = c
            .open_session(&sign_in(&key, "dev_1", None, 3, 3_000, true), 3_001)
            .unwrap();
        let token = session.value.token.clone();
        assert!(
            session
                .records
                .iter()
                .all(|r| !format!("{r:?}").contains(&token)),
            "tokens are stored hashed"
        );
        assert!(
            !format!("{:?}", session.value).contains(&token),
            "Debug hides the token"
        );
        let (who, _) = c.authenticate(&token, 3_002).unwrap();
        assert_eq!(
            who.user_uid,
            crate::auth::derive_user_uid(&key.verifying_key())
        );
        assert!(c.authenticate("ocs_forged", 3_002).is_none());
        // The same key on a new device is the same uid.
        let again = c
            .open_session(
                &sign_in(&key, "dev_1b", Some(&who.user_uid), 4, 3_000, true),
                3_003,
            )
            .unwrap();
        assert_eq!(again.value.user_uid, who.user_uid);
        // Another key cannot take the same uid.
        let other = SigningKey::from_bytes(&[9u8; 32]);
        let clash = c
            .open_session(
                &sign_in(&other, "dev_2", Some(&who.user_uid), 5, 4_000, true),
                4_001,
            )
            .unwrap_err();
        assert_eq!(
            (clash.status(), clash.code()),
            (409, "identity_key_mismatch")
        );
        // Nor a uid nobody holds yet, by asking for it first.
        let grab = c
            .open_session(
                &sign_in(&other, "dev_2", Some("uid_owner"), 6, 4_000, true),
                4_001,
            )
            .unwrap_err();
        assert_eq!((grab.status(), grab.code()), (403, "binding_required"));
        // Revoked and expired sessions do not authenticate.
        c.revoke_session(&token, 5_000).unwrap();
        assert!(c.authenticate(&token, 5_001).is_none());
    }

    #[test]
    fn an_approved_binding_lets_a_key_take_a_legacy_uid() {
        let mut c = community(HistoryVisibility::Joined);
        // uid_legacy used the server in headers mode; the owner approves its key.
        c.admit(&actor("uid_legacy"), "home", Admission::Connect, 10)
            .unwrap();
        let key = SigningKey::from_bytes(&[11u8; 32]);
        let public = base64_url(key.verifying_key().as_bytes());
        let refused = c
            .open_session(&sign_in(&key, "dev_l", Some("uid_legacy"), 1, 20, true), 21)
            .unwrap_err();
        assert_eq!(refused.code(), "binding_required");
        // A member may not approve; the owner may.
        c.admit(&actor("uid_member"), "home", Admission::Connect, 10)
            .unwrap();
        let denied = c
            .approve_binding(&actor("uid_member"), "home", "uid_legacy", &public, 30)
            .unwrap_err();
        assert_eq!(denied.status(), 403);
        let approved = c
            .approve_binding(&actor("uid_owner"), "home", "uid_legacy", &public, 31)
            .unwrap();
        assert_eq!(approved.value.approved_by_uid, "uid_owner");
        assert!(matches!(
            approved.records.as_slice(),
            [Record::IdentityBinding(b)] if b.user_uid == "uid_legacy" && b.public_key == public && b.approved_at == 31
        ));
        let session = c
            .open_session(&sign_in(&key, "dev_l", Some("uid_legacy"), 2, 40, true), 41)
            .unwrap();
        assert_eq!(session.value.user_uid, "uid_legacy");
        // A second key for the same uid is a conflict; a uid that never was a member is unknown.
        let other = base64_url(
            SigningKey::from_bytes(&[12u8; 32])
                .verifying_key()
                .as_bytes(),
        );
        let clash = c
            .approve_binding(&actor("uid_owner"), "home", "uid_legacy", &other, 50)
            .unwrap_err();
        assert_eq!(clash.code(), "identity_key_mismatch");
        let stranger = c
            .approve_binding(&actor("uid_owner"), "home", "uid_nobody", &other, 50)
            .unwrap_err();
        assert_eq!(stranger.status(), 404);
        // The owner uid itself cannot be bound away by anyone below it.
        c.set_role(&actor("uid_owner"), "home", "uid_member", Role::Admin, 60)
            .unwrap();
        let up = c
            .approve_binding(&actor("uid_member"), "home", "uid_owner", &other, 61)
            .unwrap_err();
        assert_eq!(up.status(), 403);
    }

    #[test]
    fn the_operators_key_owns_the_configured_uid_and_evicts_earlier_takers() {
        let mut c = community(HistoryVisibility::Joined);
        // Before the fix someone took uid_owner by asking first: a device with another key.
        let squatter = SigningKey::from_bytes(&[13u8; 32]);
        let operator = SigningKey::from_bytes(&[14u8; 32]);
        let operator_pub = base64_url(operator.verifying_key().as_bytes());
        let squat = Record::Device(Device {
            device_id: "dev_squat".into(),
            user_uid: "uid_owner".into(),
            public_key: base64_url(squatter.verifying_key().as_bytes()),
            created_at: 1,
            revoked_at: None,
        });
        let mut snapshot = Snapshot::default();
        if let Record::Device(d) = squat {
            snapshot.devices.push(d);
        }
        let mut c2 = Community::new(settings(HistoryVisibility::Joined), snapshot, seeded());
        c2.bootstrap_default_server("Home", Some("uid_owner"), 1);
        let bound = c2.bind_owner_key("uid_owner", &operator_pub, 2);
        assert!(bound.records.iter().any(
            |r| matches!(r, Record::Device(d) if d.device_id == "dev_squat" && d.revoked_at == Some(2))
        ));
        assert!(bound.records.iter().any(|r| matches!(r, Record::IdentityBinding(b) if b.user_uid == "uid_owner" && b.public_key == operator_pub)));
        let session = c2
            .open_session(
                &sign_in(&operator, "dev_op", Some("uid_owner"), 1, 10, true),
                11,
            )
            .unwrap();
        assert_eq!(session.value.user_uid, "uid_owner");
        let evicted = c2
            .open_session(
                &sign_in(&squatter, "dev_squat", Some("uid_owner"), 2, 10, true),
                11,
            )
            .unwrap_err();
        assert_eq!(evicted.code(), "identity_key_mismatch");
        // A key that derives the owner uid needs no binding.
        let derived = crate::auth::derive_user_uid(&operator.verifying_key());
        let plain = c.bind_owner_key(&derived, &operator_pub, 3);
        assert!(plain.records.is_empty());
    }
}
