//! Moderation (wire contract D) and the voice grant it bounds: bans, timeouts, channel locks,
//! kicks and who may moderate whom (moderators and above, over lower ranks), and the checks of
//! a join-ticket request.

use std::collections::HashMap;

use super::{Actor, Admission, Community, Notice, Outcome};
use crate::domain::error::{DomainError, Needs, What};
use crate::domain::model::{ChannelKind, Millis, Moderation, ModerationKind, Role};
use crate::domain::records::Record;

/// Moderation measures by (server, kind, target).
#[derive(Debug, Default)]
pub struct Measures {
    pub(super) by_target: HashMap<(String, ModerationKind, String), Moderation>,
}

impl Measures {
    pub(super) fn measure(
        &self,
        server_id: &str,
        kind: ModerationKind,
        target: &str,
        now: Millis,
    ) -> Option<&Moderation> {
        self.by_target
            .get(&(server_id.to_owned(), kind, target.to_owned()))
            .filter(|m| m.in_force(now))
    }
}

impl Community {
    /// Whether `uid` is banned from `server_id` at `now`.
    pub fn is_banned(&self, server_id: &str, uid: &str, now: Millis) -> bool {
        self.measures
            .measure(server_id, ModerationKind::Ban, uid, now)
            .is_some()
    }

    /// Checks a join-ticket request (wire contract A.8) and decides the permissions: identity
    /// and membership (a ticket is an "opening" act: it re-admits a uid that left), the channel
    /// is a voice channel of `server_id`, the uid is not banned, the channel is not locked. A uid
    /// in timeout gets a listen-only ticket.
    pub fn grant_voice(
        &mut self,
        actor: &Actor,
        server_id: &str,
        channel_id: &str,
        now: Millis,
    ) -> Result<Outcome<crate::rtc::ticket::Permissions>, DomainError> {
        self.directory.server(server_id)?;
        let channel = self.directory.channel(channel_id)?;
        if channel.server_id != server_id {
            return Err(DomainError::NotFound(What::Channel));
        }
        if channel.kind != ChannelKind::Voice {
            return Err(DomainError::NotAVoiceChannel);
        }
        let (private, member_speak) = (channel.access.view_min_role, channel.access.member_speak);
        if self.is_banned(server_id, &actor.user_uid, now) {
            return Err(DomainError::Banned);
        }
        if self
            .measures
            .measure(server_id, ModerationKind::Lock, channel_id, now)
            .is_some()
        {
            return Err(DomainError::ChannelLocked);
        }
        let mut records = Vec::new();
        self.admit_inner(
            server_id,
            &actor.user_uid,
            Admission::Connect,
            now,
            &mut records,
        )?;
        let role = self.current_role(server_id, &actor.user_uid);
        if private.is_some_and(|min| !role.is_some_and(|r| r.at_least(min))) {
            let refusal = DomainError::NotFound(What::Channel);
            return Err(self.refuse_after_join(server_id, &actor.user_uid, &records, refusal));
        }
        let listen_only = !member_speak && role == Some(Role::Member);
        let permissions = if listen_only
            || self
                .measures
                .measure(server_id, ModerationKind::Timeout, &actor.user_uid, now)
                .is_some()
        {
            crate::rtc::ticket::Permissions::LISTEN_ONLY
        } else {
            crate::rtc::ticket::Permissions::ALL
        };
        Ok(Outcome::stored(permissions, records))
    }

    /// Whether `uid` (with `role`) may post in `channel` now: not while in a timeout, and in a
    /// locked channel only as a moderator or above.
    pub(super) fn may_post(
        &self,
        channel: &crate::domain::model::Channel,
        uid: &str,
        role: Role,
        now: Millis,
    ) -> Result<(), DomainError> {
        let server_id = channel.server_id.as_str();
        if !channel.access.viewable_by(Some(role)) {
            return Err(DomainError::NotFound(What::Channel));
        }
        if channel
            .access
            .post_min_role
            .is_some_and(|min| !role.at_least(min))
        {
            return Err(DomainError::ReadOnlyChannel);
        }
        if self
            .measures
            .measure(server_id, ModerationKind::Timeout, uid, now)
            .is_some()
        {
            return Err(DomainError::TimedOut);
        }
        let locked = self
            .measures
            .measure(server_id, ModerationKind::Lock, &channel.id, now)
            .is_some();
        if locked && !role.at_least(Role::Moderator) {
            return Err(DomainError::ChannelLocked);
        }
        Ok(())
    }

    /// Who may moderate whom: moderators and above, over members of a lower rank.
    pub(super) fn moderator_over(
        &mut self,
        actor: &Actor,
        server_id: &str,
        target_uid: &str,
        now: Millis,
    ) -> Result<(), DomainError> {
        self.directory.server(server_id)?;
        let role = self
            .current_role(server_id, &actor.user_uid)
            .ok_or(DomainError::NotAMember)?;
        if !role.at_least(Role::Moderator) {
            return Err(DomainError::Forbidden(Needs::Moderator));
        }
        let target_role = self
            .roster
            .membership(server_id, target_uid)
            .map(|m| m.role)
            .unwrap_or(Role::Member);
        if target_uid == actor.user_uid || target_role.rank() >= role.rank() {
            return Err(DomainError::Forbidden(Needs::HigherRank));
        }
        self.limiter.check(&actor.user_uid, now)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn set_measure(
        &mut self,
        actor: &Actor,
        server_id: &str,
        kind: ModerationKind,
        target: &str,
        until: Option<Millis>,
        active: bool,
        now: Millis,
    ) -> Record {
        let m = Moderation {
            server_id: server_id.to_owned().into(),
            kind,
            target: target.to_owned(),
            until,
            active,
            by_uid: actor.user_uid.clone(),
            at: now,
        };
        self.measures
            .by_target
            .insert((server_id.to_owned(), kind, target.to_owned()), m.clone());
        Record::Moderation(m)
    }

    /// Kick (wire contract D): the membership span ends, the uid's voice session ends at once
    /// (`rtc.kicked`, then its signaling socket is closed), its realtime sockets of the server
    /// close and its unused join tickets stop working. Unlike a ban it may come back.
    pub fn kick(
        &mut self,
        actor: &Actor,
        server_id: &str,
        target_uid: &str,
        now: Millis,
    ) -> Result<Outcome<()>, DomainError> {
        self.moderator_over(actor, server_id, target_uid, now)?;
        self.expel(server_id, target_uid, "kicked", now)
    }

    /// What a kick and a ban both do to their target: its membership ends, the join tickets
    /// it took before are void, and its voice session is kicked — the kick notice first, so
    /// the participant gets `rtc.kicked` before the leave removes it.
    pub(super) fn expel(
        &mut self,
        server_id: &str,
        target_uid: &str,
        reason: &'static str,
        now: Millis,
    ) -> Result<Outcome<()>, DomainError> {
        let target = Actor {
            user_uid: target_uid.to_owned().into(),
            device_id: String::new(),
        };
        let left = self.leave_for(&target, server_id, reason, now)?;
        // `leave` voids them only when the target is a current member.
        self.tickets.void_member(server_id, target_uid, now);
        let mut notices = vec![Notice::VoiceKick {
            server_id: server_id.to_owned(),
            user_uid: target_uid.to_owned(),
        }];
        notices.extend(left.notices);
        Ok(Outcome {
            records: left.records,
            events: left.events,
            notices,
            ..Outcome::pure(())
        })
    }

    /// Ban (until `until`, or until lifted): no more join tickets, membership ends, sockets of
    /// the server close and any voice session is kicked.
    pub fn ban(
        &mut self,
        actor: &Actor,
        server_id: &str,
        target_uid: &str,
        until: Option<Millis>,
        now: Millis,
    ) -> Result<Outcome<()>, DomainError> {
        self.moderator_over(actor, server_id, target_uid, now)?;
        let record = self.set_measure(
            actor,
            server_id,
            ModerationKind::Ban,
            target_uid,
            until,
            true,
            now,
        );
        let mut expelled = self.expel(server_id, target_uid, "banned", now)?;
        expelled.records.insert(0, record);
        Ok(expelled)
    }

    pub fn unban(
        &mut self,
        actor: &Actor,
        server_id: &str,
        target_uid: &str,
        now: Millis,
    ) -> Result<Outcome<()>, DomainError> {
        self.moderator_over(actor, server_id, target_uid, now)?;
        let record = self.set_measure(
            actor,
            server_id,
            ModerationKind::Ban,
            target_uid,
            None,
            false,
            now,
        );
        Ok(Outcome::stored((), vec![record]))
    }

    /// Timeout until `until`: the uid may still join calls, listen-only.
    pub fn timeout(
        &mut self,
        actor: &Actor,
        server_id: &str,
        target_uid: &str,
        until: Millis,
        now: Millis,
    ) -> Result<Outcome<()>, DomainError> {
        self.moderator_over(actor, server_id, target_uid, now)?;
        let record = self.set_measure(
            actor,
            server_id,
            ModerationKind::Timeout,
            target_uid,
            Some(until),
            true,
            now,
        );
        Ok(Outcome::stored((), vec![record]))
    }

    /// Locks (or unlocks) a voice channel: no new join tickets; who is in stays.
    pub fn lock_channel(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        locked: bool,
        now: Millis,
    ) -> Result<Outcome<()>, DomainError> {
        let server_id = self.directory.channel(channel_id)?.server_id.clone();
        let role = self
            .current_role(&server_id, &actor.user_uid)
            .ok_or(DomainError::NotAMember)?;
        if !role.at_least(Role::Moderator) {
            return Err(DomainError::Forbidden(Needs::Moderator));
        }
        let record = self.set_measure(
            actor,
            &server_id,
            ModerationKind::Lock,
            channel_id,
            None,
            locked,
            now,
        );
        Ok(Outcome::stored((), vec![record]))
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::community::fixtures::*;
    use crate::domain::community::{Admission, Community, Notice};
    use crate::domain::model::{HistoryVisibility, Moderation, ModerationKind, Role};
    use crate::domain::records::{Record, Snapshot};

    #[test]
    fn voice_grants_check_channel_membership_ban_lock_and_timeout() {
        use crate::rtc::ticket::Permissions;
        let mut c = community(HistoryVisibility::Joined);
        let owner = actor("uid_owner");
        let alice = actor("uid_alice");
        let voice = voice_channel(&mut c, &alice);
        let text = text_channel(&mut c, "home", &alice);
        assert_eq!(
            c.grant_voice(&alice, "home", &voice, 1).unwrap().value,
            Permissions::ALL
        );
        assert_eq!(
            c.grant_voice(&alice, "home", &text, 1).unwrap_err().code(),
            "not_a_voice_channel"
        );
        assert_eq!(
            c.grant_voice(&alice, "nope", &voice, 1).unwrap_err().code(),
            "server_not_found"
        );
        let other = c
            .create_server(&owner, "Other", "", "", 1)
            .unwrap()
            .value
            .server
            .server_id;
        assert_eq!(
            c.grant_voice(&alice, &other, &voice, 1).unwrap_err().code(),
            "channel_not_found"
        );

        // A ticket re-admits a uid that left (an "opening" act).
        c.leave(&alice, "home", 2).unwrap();
        assert!(c.grant_voice(&alice, "home", &voice, 3).is_ok());
        assert!(c.current_role("home", "uid_alice").is_some());

        // Timeout: listen-only until it ends.
        c.timeout(&owner, "home", "uid_alice", 100, 4).unwrap();
        assert_eq!(
            c.grant_voice(&alice, "home", &voice, 50).unwrap().value,
            Permissions::LISTEN_ONLY
        );
        assert_eq!(
            c.grant_voice(&alice, "home", &voice, 100).unwrap().value,
            Permissions::ALL
        );

        // Lock: no new tickets for anyone until unlocked.
        c.lock_channel(&owner, &voice, true, 5).unwrap();
        assert_eq!(
            c.grant_voice(&alice, "home", &voice, 6).unwrap_err().code(),
            "channel_locked"
        );
        c.lock_channel(&owner, &voice, false, 7).unwrap();
        assert!(c.grant_voice(&alice, "home", &voice, 8).is_ok());

        // Ban: membership ends, sockets close, voice is kicked, no ticket; lifting it restores.
        let banned = c.ban(&owner, "home", "uid_alice", None, 9).unwrap();
        assert!(banned.notices.contains(&Notice::VoiceKick {
            server_id: "home".into(),
            user_uid: "uid_alice".into()
        }));
        assert!(
            banned
                .notices
                .iter()
                .any(|n| matches!(n, Notice::MemberLeft { .. }))
        );
        assert!(banned.records.iter().any(
            |r| matches!(r, Record::Moderation(m) if m.kind == ModerationKind::Ban && m.active)
        ));
        assert_eq!(
            c.grant_voice(&alice, "home", &voice, 10)
                .unwrap_err()
                .code(),
            "banned"
        );
        c.unban(&owner, "home", "uid_alice", 11).unwrap();
        assert!(c.grant_voice(&alice, "home", &voice, 12).is_ok());
    }

    #[test]
    fn only_moderators_moderate_and_never_upwards() {
        let mut c = community(HistoryVisibility::Joined);
        let owner = actor("uid_owner");
        let moderator = actor("uid_mod");
        let member = actor("uid_member");
        c.admit(&moderator, "home", Admission::Connect, 1).unwrap();
        c.admit(&member, "home", Admission::Connect, 1).unwrap();
        assert_eq!(
            c.kick(&member, "home", "uid_mod", 2).unwrap_err().status(),
            403
        );
        c.set_role(&owner, "home", "uid_mod", Role::Moderator, 3)
            .unwrap();
        assert_eq!(
            c.set_role(&moderator, "home", "uid_member", Role::Admin, 3)
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            c.set_role(&owner, "home", "uid_mod", Role::Owner, 3)
                .unwrap_err()
                .code(),
            "invalid_role"
        );
        let kicked = c.kick(&moderator, "home", "uid_member", 4).unwrap();
        // A kick ends the membership: voice first (`rtc.kicked`), then the sockets.
        assert_eq!(
            kicked.notices,
            vec![
                Notice::VoiceKick {
                    server_id: "home".into(),
                    user_uid: "uid_member".into()
                },
                Notice::MemberLeft {
                    server_id: "home".into(),
                    user_uid: "uid_member".into()
                }
            ]
        );
        assert!(c.current_role("home", "uid_member").is_none());
        // Not the owner, not oneself, not a peer of the same rank.
        assert_eq!(
            c.kick(&moderator, "home", "uid_owner", 5)
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            c.ban(&moderator, "home", "uid_mod", None, 5)
                .unwrap_err()
                .status(),
            403
        );
        let voice = voice_channel(&mut c, &owner);
        assert_eq!(
            c.lock_channel(&member, &voice, true, 6)
                .unwrap_err()
                .status(),
            403
        );
    }

    #[test]
    fn moderation_survives_a_reload() {
        let mut c = community(HistoryVisibility::Joined);
        let owner = actor("uid_owner");
        let alice = actor("uid_alice");
        let voice = voice_channel(&mut c, &alice);
        let banned = c.ban(&owner, "home", "uid_alice", Some(1_000), 9).unwrap();
        let measures: Vec<Moderation> = banned
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Moderation(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        let mut reloaded = Community::new(
            settings(HistoryVisibility::Joined),
            Snapshot {
                moderation: measures,
                ..Snapshot::default()
            },
            seeded(),
        );
        reloaded.bootstrap_default_server("Home", Some("uid_owner"), 10);
        let voice2 = voice_channel(&mut reloaded, &owner);
        assert_eq!(
            reloaded
                .grant_voice(&alice, "home", &voice2, 500)
                .unwrap_err()
                .code(),
            "banned"
        );
        assert!(
            reloaded.grant_voice(&alice, "home", &voice2, 1_000).is_ok(),
            "the ban ran out"
        );
        let _ = voice;
    }
}
