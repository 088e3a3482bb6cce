//! Roles (wire contract Part D) and the moderation audit every change of them, and every
//! moderation act, is written to. Ranks are `owner > admin > moderator > member`; a role is
//! changed only by someone who outranks both the member's current role and the role given
//! (so only the owner appoints admins), never on oneself, never on the owner. The audit is
//! append-only: here it is only ever added to ([`Community::audit`]), and the database refuses
//! an update or delete of its rows.

use serde::Serialize;

use super::{Actor, Community, Outcome};
use crate::domain::error::{DomainError, Needs, What};
use crate::domain::model::{AuditEntry, Membership, Millis, Role};
use crate::domain::records::Record;
use crate::domain::views::{RoleItem, Roles};

#[derive(Serialize)]
struct RoleChanged<'a> {
    user_uid: &'a str,
    from: &'static str,
    to: &'static str,
}

#[derive(Serialize)]
struct RoleUpdated<'a> {
    server_id: &'a str,
    user_uid: &'a str,
    role: &'static str,
}

impl Community {
    /// Appends an audit row for `server_id` (in `records`, committed with the change it
    /// records).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn audit<T: Serialize>(
        &mut self,
        records: &mut Vec<Record>,
        server_id: &str,
        case_id: Option<&str>,
        actor_uid: &str,
        event_type: &str,
        payload: &T,
        now: Millis,
    ) {
        self.last_audit_seq += 1;
        records.push(Record::Audit(AuditEntry {
            seq: self.last_audit_seq,
            audit_id: self.entropy.id("aud"),
            server_id: server_id.to_owned().into(),
            case_id: case_id.map(str::to_owned),
            actor_uid: actor_uid.to_owned().into(),
            event_type: event_type.to_owned(),
            payload: super::encode(payload),
            created_at: now,
        }));
    }

    /// Staff of the server: a moderator or above (who reads the audit and every case).
    pub fn require_staff(&self, server_id: &str, actor: &Actor) -> Result<Role, DomainError> {
        self.directory.server(server_id)?;
        match self.current_role(server_id, &actor.user_uid) {
            Some(role) if role.at_least(Role::Moderator) => Ok(role),
            Some(_) => Err(DomainError::Forbidden(Needs::Moderator)),
            None => Err(DomainError::NotAMember),
        }
    }

    /// `GET /v1/servers/{id}/roles` (a member): every current member with its role, by rank
    /// then uid.
    pub fn roles(&self, actor: &Actor, server_id: &str) -> Result<Roles, DomainError> {
        self.directory.server(server_id)?;
        if self.current_role(server_id, &actor.user_uid).is_none() {
            return Err(DomainError::NotAMember);
        }
        let mut members: Vec<RoleItem> = self
            .roster
            .memberships
            .values()
            .filter(|m| m.server_id == server_id && m.is_current())
            .map(|m| RoleItem {
                user_uid: m.user_uid.to_string(),
                role: m.role.as_str(),
            })
            .collect();
        members.sort_by(|a, b| {
            let rank = |r: &str| Role::parse(r).map_or(0, Role::rank);
            (std::cmp::Reverse(rank(a.role)), &a.user_uid)
                .cmp(&(std::cmp::Reverse(rank(b.role)), &b.user_uid))
        });
        Ok(Roles {
            server_id: server_id.to_owned(),
            members,
        })
    }

    /// `PUT /v1/servers/{id}/roles {user_uid, role}`: the actor (admin or above) outranks the
    /// member's current role and the role it gives; nobody changes its own role or the
    /// owner's, and ownership is not given this way. Audited, and told to the server as
    /// `chat.member.role_updated`.
    pub fn set_role(
        &mut self,
        actor: &Actor,
        server_id: &str,
        target_uid: &str,
        role: Role,
        now: Millis,
    ) -> Result<Outcome<RoleItem>, DomainError> {
        self.directory.server(server_id)?;
        let mine = self
            .current_role(server_id, &actor.user_uid)
            .ok_or(DomainError::NotAMember)?;
        if !mine.at_least(Role::Admin) {
            return Err(DomainError::Forbidden(Needs::Admin));
        }
        if role == Role::Owner {
            return Err(DomainError::OwnershipByClaim);
        }
        if target_uid == actor.user_uid {
            return Err(DomainError::Forbidden(Needs::HigherRank));
        }
        let m = self
            .roster
            .membership(server_id, target_uid)
            .filter(|m| m.is_current())
            .cloned()
            .ok_or(DomainError::NotFound(What::Member))?;
        if m.role.rank() >= mine.rank() || role.rank() >= mine.rank() {
            return Err(DomainError::Forbidden(Needs::HigherRank));
        }
        self.limiter.check(&actor.user_uid, now)?;
        let item = RoleItem {
            user_uid: target_uid.to_owned(),
            role: role.as_str(),
        };
        if m.role == role {
            return Ok(Outcome::stored(item, Vec::new()));
        }
        let from = m.role;
        let m = Membership { role, ..m };
        let mut records = vec![Record::Membership(m.clone())];
        self.roster.index(m);
        let changed = RoleChanged {
            user_uid: target_uid,
            from: from.as_str(),
            to: role.as_str(),
        };
        self.audit(
            &mut records,
            server_id,
            None,
            &actor.user_uid,
            "role_updated",
            &changed,
            now,
        );
        let event = self.role_updated_event(&mut records, server_id, target_uid, role, now);
        Ok(Outcome::published(item, records, vec![event]))
    }

    /// `chat.member.role_updated {server_id, user_uid, role}` for the server.
    pub(super) fn role_updated_event(
        &mut self,
        records: &mut Vec<Record>,
        server_id: &str,
        user_uid: &str,
        role: Role,
        now: Millis,
    ) -> super::Emitted {
        let payload = RoleUpdated {
            server_id,
            user_uid,
            role: role.as_str(),
        };
        self.server_event(
            records,
            server_id,
            "chat.member.role_updated",
            &payload,
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::community::Admission;
    use crate::domain::community::fixtures::*;
    use crate::domain::model::{HistoryVisibility, Role};
    use crate::domain::records::Record;

    #[test]
    fn only_a_higher_rank_changes_a_role_and_every_change_is_audited() {
        let mut c = community(HistoryVisibility::Joined);
        let owner = actor("uid_owner");
        let (admin, moderator, member) = (actor("uid_admin"), actor("uid_mod"), actor("uid_m"));
        c.admit(&owner, "home", Admission::Connect, 1).unwrap();
        for a in [&admin, &moderator, &member] {
            c.admit(a, "home", Admission::Connect, 1).unwrap();
        }
        let made = c
            .set_role(&owner, "home", "uid_admin", Role::Admin, 2)
            .unwrap();
        assert_eq!(made.events[0].kind, "chat.member.role_updated");
        let audits: Vec<_> = made
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Audit(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(audits.len(), 1);
        assert_eq!(audits[0].event_type, "role_updated");
        assert!(
            audits[0]
                .payload
                .contains("\"from\":\"member\",\"to\":\"admin\"")
        );
        // An admin appoints moderators, not admins; nobody acts on an equal rank or itself.
        c.set_role(&admin, "home", "uid_mod", Role::Moderator, 3)
            .unwrap();
        let code = |r: Result<_, crate::domain::error::DomainError>| r.unwrap_err().code();
        assert_eq!(
            code(c.set_role(&admin, "home", "uid_m", Role::Admin, 4)),
            "forbidden"
        );
        assert_eq!(
            code(c.set_role(&admin, "home", "uid_admin", Role::Member, 4)),
            "forbidden"
        );
        assert_eq!(
            code(c.set_role(&admin, "home", "uid_owner", Role::Member, 4)),
            "forbidden"
        );
        assert_eq!(
            code(c.set_role(&moderator, "home", "uid_m", Role::Moderator, 4)),
            "forbidden"
        );
        assert_eq!(
            code(c.set_role(&member, "home", "uid_m", Role::Moderator, 4)),
            "forbidden"
        );
        assert_eq!(
            code(c.set_role(&owner, "home", "uid_m", Role::Owner, 4)),
            "invalid_role"
        );
        assert_eq!(
            code(c.set_role(&owner, "home", "uid_nobody", Role::Moderator, 4)),
            "member_not_found"
        );
        assert_eq!(
            code(c.set_role(&actor("uid_out"), "home", "uid_m", Role::Moderator, 4)),
            "not_a_member"
        );
        let same = c
            .set_role(&owner, "home", "uid_mod", Role::Moderator, 5)
            .unwrap();
        assert!(
            same.records.is_empty() && same.events.is_empty(),
            "no change, no audit"
        );
        let roles = c.roles(&member, "home").unwrap();
        let listed: Vec<(&str, &str)> = roles
            .members
            .iter()
            .map(|m| (m.user_uid.as_str(), m.role))
            .collect();
        assert_eq!(
            listed,
            [
                ("uid_owner", "owner"),
                ("uid_admin", "admin"),
                ("uid_mod", "moderator"),
                ("uid_m", "member")
            ]
        );
    }
}
