//! Who belongs to which server: memberships with their spans and roles, the open realtime
//! sockets behind member status, and the rules of admission (first contact, connect), leaving,
//! the member list, roles and realtime subscriptions.

use crate::domain::ids::{ServerId, UserUid};
use std::collections::{HashMap, HashSet};

use super::{Actor, Admission, Community, Notice, Outcome};
use crate::domain::error::{DomainError, Needs, Readable, What};
use crate::domain::model::{JoinPolicy, Membership, Millis, Role, Span};
use crate::domain::records::Record;
use crate::domain::views::{self, Left, MemberItem, Members};

/// Memberships (current and past) and who is online, by (server, uid).
#[derive(Debug, Default)]
pub struct Roster {
    pub(super) memberships: HashMap<(ServerId, UserUid), Membership>,
    /// uid → servers it has a membership row in (current or past).
    pub(super) user_servers: HashMap<UserUid, HashSet<ServerId>>,
    /// server → uids with a membership row in it (current or past): who a server's audience
    /// is drawn from without walking every membership of the instance.
    pub(super) server_users: HashMap<ServerId, HashSet<UserUid>>,
    /// Open realtime sockets per (server, uid), for member status.
    pub(super) online: HashMap<(ServerId, UserUid), u32>,
}

impl Roster {
    pub(super) fn index(&mut self, m: Membership) {
        self.user_servers
            .entry(m.user_uid.clone())
            .or_default()
            .insert(m.server_id.clone());
        self.server_users
            .entry(m.server_id.clone())
            .or_default()
            .insert(m.user_uid.clone());
        self.memberships
            .insert((m.server_id.clone(), m.user_uid.clone()), m);
    }

    pub(super) fn membership(&self, server_id: &str, uid: &str) -> Option<&Membership> {
        self.memberships
            .get(&(ServerId::from(server_id), UserUid::from(uid)))
    }

    /// The uid's role when it is a current member.
    pub(super) fn current_role(&self, server_id: &str, uid: &str) -> Option<Role> {
        self.membership(server_id, uid)
            .filter(|m| m.is_current())
            .map(|m| m.role)
    }

    pub(super) fn rollback_join(&mut self, server_id: &str, uid: &str) {
        let key = (ServerId::from(server_id), UserUid::from(uid));
        if let Some(m) = self.memberships.get_mut(&key) {
            m.spans.pop();
            if m.spans.is_empty() {
                self.memberships.remove(&key);
                if let Some(set) = self.user_servers.get_mut(uid) {
                    set.remove(server_id);
                }
                if let Some(set) = self.server_users.get_mut(server_id) {
                    set.remove(uid);
                }
            }
        }
    }
}

impl Community {
    /// Makes sure `actor` is a current member of `server_id`, joining it when `how` allows.
    /// Returns the role and the records of a join, if one happened.
    pub(super) fn admit_inner(
        &mut self,
        server_id: &str,
        uid: &str,
        how: Admission,
        now: Millis,
        records: &mut Vec<Record>,
    ) -> Result<Role, DomainError> {
        let server = self.directory.server(server_id)?;
        let key = (ServerId::from(server_id), UserUid::from(uid));
        let span = Span {
            joined_seq: self.last_seq,
            joined_at: now,
            left_seq: None,
            left_at: None,
        };
        let membership = match self.roster.memberships.get(&key) {
            Some(m) if m.is_current() => return Ok(m.role),
            Some(_) if how == Admission::FirstContact => return Err(DomainError::NotAMember),
            // Every way in below: a ban blocks them all, and an invite-only server is entered
            // by redeeming an invite only.
            _ if self.is_banned(server_id, uid, now) => return Err(DomainError::Banned),
            _ if server.join_policy == JoinPolicy::Invite && how != Admission::Invite => {
                return Err(DomainError::InviteRequired);
            }
            Some(m) => {
                let mut m = m.clone();
                m.spans.push(span);
                m
            }
            None => {
                let role = if server.owner_uid.as_deref() == Some(uid) {
                    Role::Owner
                } else {
                    Role::Member
                };
                Membership {
                    server_id: server_id.to_owned().into(),
                    user_uid: uid.to_owned().into(),
                    role,
                    spans: vec![span],
                }
            }
        };
        let role = membership.role;
        records.push(Record::Membership(membership.clone()));
        self.roster.index(membership);
        Ok(role)
    }

    /// A refusal decided after `admit_inner` may have joined `uid` (its records in `joined`):
    /// that join is undone, so the refused request changes nothing, and the refusal is handed
    /// back to return.
    pub(super) fn refuse_after_join(
        &mut self,
        server_id: &str,
        uid: &str,
        joined: &[Record],
        refusal: DomainError,
    ) -> DomainError {
        if !joined.is_empty() {
            self.roster.rollback_join(server_id, uid);
        }
        refusal
    }

    /// Explicit admission (realtime connect, voice join): joins or re-admits.
    pub fn admit(
        &mut self,
        actor: &Actor,
        server_id: &str,
        how: Admission,
        now: Millis,
    ) -> Result<Outcome<Role>, DomainError> {
        let mut records = Vec::new();
        let role = self.admit_inner(server_id, &actor.user_uid, how, now, &mut records)?;
        Ok(Outcome::stored(role, records))
    }

    /// `DELETE /v1/servers/{id}/membership`: closes the current span. Idempotent.
    pub fn leave(
        &mut self,
        actor: &Actor,
        server_id: &str,
        now: Millis,
    ) -> Result<Outcome<Left>, DomainError> {
        self.leave_for(actor, server_id, "left", now)
    }

    /// Ends `actor`'s membership for `reason` (`left`, `kicked`, `banned`): the server hears
    /// `chat.member.removed {server_id, user_uid, reason}`.
    pub(super) fn leave_for(
        &mut self,
        actor: &Actor,
        server_id: &str,
        reason: &'static str,
        now: Millis,
    ) -> Result<Outcome<Left>, DomainError> {
        self.directory.server(server_id)?;
        let key = (ServerId::from(server_id), actor.user_uid.clone());
        let mut out = Outcome::pure(Left {
            server_id: server_id.to_owned(),
            user_uid: actor.user_uid.clone().into(),
            left: true,
            left_at: views::rfc3339(now),
        });
        let Some(m) = self.roster.memberships.get(&key) else {
            return Ok(out);
        };
        if !m.is_current() {
            if let Some(at) = m.spans.last().and_then(|s| s.left_at) {
                out.value.left_at = views::rfc3339(at);
            }
            return Ok(out);
        }
        let mut m = m.clone();
        if let Some(span) = m.spans.last_mut() {
            span.left_seq = Some(self.last_seq);
            span.left_at = Some(now);
        }
        self.tickets.void_member(server_id, &actor.user_uid, now);
        out.records.push(Record::Membership(m.clone()));
        out.notices.push(Notice::MemberLeft {
            server_id: server_id.to_owned(),
            user_uid: actor.user_uid.clone().into(),
        });
        self.roster.index(m);
        #[derive(serde::Serialize)]
        struct Removed<'a> {
            server_id: &'a str,
            user_uid: &'a str,
            reason: &'static str,
        }
        let removed = Removed {
            server_id,
            user_uid: &actor.user_uid,
            reason,
        };
        let event = self.server_event(
            &mut out.records,
            server_id,
            "chat.member.removed",
            &removed,
            now,
        );
        out.events.push(event);
        Ok(out)
    }

    /// Realtime bookkeeping for member status.
    pub fn socket_opened(&mut self, server_id: &str, uid: &str) {
        *self
            .roster
            .online
            .entry((server_id.to_owned().into(), uid.to_owned().into()))
            .or_default() += 1;
    }

    pub fn socket_closed(&mut self, server_id: &str, uid: &str) {
        let key = (ServerId::from(server_id), UserUid::from(uid));
        if let Some(n) = self.roster.online.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.roster.online.remove(&key);
            }
        }
    }

    /// Whether `viewer` is shown `uid` online in the server: it has a socket there and does
    /// not hide its presence (from others: a user always sees itself as it is).
    fn shown_online(&self, server_id: &str, uid: &str, viewer: Option<&Actor>) -> bool {
        let online = self
            .roster
            .online
            .contains_key(&(ServerId::from(server_id), UserUid::from(uid)));
        online
            && (viewer.is_some_and(|v| v.user_uid == uid)
                || !self.presence_hidden(server_id, uid).0)
    }

    /// Whether the uid may read anonymously-visible parts of the server.
    pub(super) fn require_readable_server(
        &mut self,
        server_id: &str,
        actor: Option<&Actor>,
        now: Millis,
        records: &mut Vec<Record>,
    ) -> Result<Option<Role>, DomainError> {
        self.directory.server(server_id)?;
        match actor {
            None if self.directory.has_public_channel(server_id) => Ok(None),
            None => Err(DomainError::IdentityRequired(Readable::Server)),
            Some(actor) => {
                match self.admit_inner(
                    server_id,
                    &actor.user_uid,
                    Admission::FirstContact,
                    now,
                    records,
                ) {
                    Ok(role) => Ok(Some(role)),
                    Err(DomainError::NotAMember)
                        if self.directory.has_public_channel(server_id) =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    pub(super) fn require_admin(
        &mut self,
        server_id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Vec<Record>, DomainError> {
        let mut records = Vec::new();
        let role = self.admit_inner(
            server_id,
            &actor.user_uid,
            Admission::FirstContact,
            now,
            &mut records,
        )?;
        if !role.at_least(Role::Admin) {
            // A first contact may have joined above: undone, as the request is refused.
            let refusal = DomainError::Forbidden(Needs::Admin);
            return Err(self.refuse_after_join(server_id, &actor.user_uid, &records, refusal));
        }
        Ok(records)
    }

    /// The owner-or-admin check of a read: a current member with that role, or 403 (a read
    /// joins nobody).
    pub(super) fn require_admin_now(
        &self,
        server_id: &str,
        actor: &Actor,
    ) -> Result<(), DomainError> {
        match self.roster.current_role(server_id, &actor.user_uid) {
            Some(role) if role.at_least(Role::Admin) => Ok(()),
            _ => Err(DomainError::Forbidden(Needs::Admin)),
        }
    }

    /// `GET /v1/servers/{id}/members`: current members with their live status.
    pub fn members(
        &mut self,
        actor: Option<&Actor>,
        server_id: &str,
        now: Millis,
    ) -> Result<Outcome<Members>, DomainError> {
        let mut records = Vec::new();
        self.require_readable_server(server_id, actor, now, &mut records)?;
        let mut members: Vec<MemberItem> = self
            .roster
            .memberships
            .values()
            .filter(|m| m.server_id == server_id && m.is_current())
            .map(|m| MemberItem {
                id: m.user_uid.clone().into(),
                name: self.display_name_in(server_id, &m.user_uid),
                status: if self.shown_online(server_id, &m.user_uid, actor) {
                    "online"
                } else {
                    "offline"
                },
                role: m.role.as_str(),
            })
            .collect();
        members.sort_by(|a, b| {
            (a.status != "online", &a.name, &a.id).cmp(&(b.status != "online", &b.name, &b.id))
        });
        Ok(Outcome::stored(
            Members {
                server_id: server_id.to_owned(),
                members,
            },
            records,
        ))
    }

    /// Whether `actor` may subscribe to `channel_id` on a socket of `server_id`.
    pub fn may_subscribe(
        &self,
        actor: &Actor,
        server_id: &str,
        channel_id: &str,
    ) -> Result<(), DomainError> {
        let channel = self.directory.channel(channel_id)?;
        if channel.server_id != server_id {
            return Err(DomainError::NotFound(What::Channel));
        }
        let role = self
            .current_role(server_id, &actor.user_uid)
            .ok_or(DomainError::NotAMember)?;
        // A private channel's presence and typing are for its roles only.
        if !channel.access.viewable_by(Some(role)) {
            return Err(DomainError::NotFound(What::Channel));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::community::fixtures::*;
    use crate::domain::community::{Admission, Notice};
    use crate::domain::history::MemoryHistory;
    use crate::domain::model::{ChannelKind, EventId, HistoryVisibility};

    #[test]
    fn leaving_ends_access_and_rejoining_opens_a_new_span() {
        let mut c = community(HistoryVisibility::Joined);
        let mut history = MemoryHistory::default();
        let alice = actor("uid_alice");
        let bob = actor("uid_bob");
        let channel = text_channel(&mut c, "home", &alice);
        post(&mut c, &mut history, &bob, &channel, "one", None);
        let left = c.leave(&bob, "home", 11).unwrap();
        assert!(matches!(left.notices[0], Notice::MemberLeft { .. }));
        // Leaving twice is fine and changes nothing.
        assert!(c.leave(&bob, "home", 12).unwrap().records.is_empty());
        post(&mut c, &mut history, &alice, &channel, "two", None);
        // A uid that left can neither read nor post nor subscribe until it comes back.
        assert_eq!(
            read(&mut c, &history, Some(&bob), &channel)
                .unwrap_err()
                .code(),
            "not_a_member"
        );
        let post_err = c
            .post_message(&bob, &channel, plain("x", None), 13)
            .unwrap_err();
        assert_eq!(post_err.code(), "not_a_member");
        assert_eq!(
            c.may_subscribe(&bob, "home", &channel).unwrap_err().code(),
            "not_a_member"
        );
        // Opening the server again (realtime connect) re-admits with a new span.
        c.admit(&bob, "home", Admission::Connect, 14).unwrap();
        post(&mut c, &mut history, &alice, &channel, "three", None);
        assert_eq!(
            read(&mut c, &history, Some(&bob), &channel).unwrap(),
            vec!["one", "three"]
        );
    }

    #[test]
    fn a_refused_command_changes_nothing() {
        let mut c = community(HistoryVisibility::Joined);
        let member = actor("uid_member");
        // First contact inside a refused admin command does not leave a membership behind.
        c.create_category(&member, "home", "X", ChannelKind::Text, 1)
            .unwrap_err();
        assert_eq!(c.current_role("home", "uid_member"), None);
        assert_eq!(c.last_event_id("home"), EventId::NONE);
    }
}
