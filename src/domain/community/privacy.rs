//! A member's privacy in one server (wire contract Part D): whether others see its presence
//! and typing, and who may mention it. The server enforces both: a hidden user is offline in
//! the member list and leaves no presence or typing trace (the realtime presence takes the
//! change through [`Notice::PresenceVisibility`]); a mention of a user who does not permit it
//! from its author is not parsed as a mention, so it notifies nobody
//! ([`Community::may_mention`], the one rule for posting and for mention suggestions).

use std::collections::HashMap;

use super::{Actor, Admission, Community, Notice, Outcome};
use crate::domain::error::DomainError;
use crate::domain::ids::{ServerId, UserUid};
use crate::domain::model::{MentionPermission, Millis, PresenceVisibility, Privacy, Role};
use crate::domain::records::Record;
use crate::domain::views::{PrivacyItem, rfc3339};

/// Saved privacy settings by (server, uid); a pair that never saved one has the default.
#[derive(Debug, Default)]
pub struct PrivacyStore {
    pub(super) by_member: HashMap<(ServerId, UserUid), Privacy>,
}

/// `PUT /v1/servers/{id}/privacy/me`: the fields to change (absent: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivacyChange {
    pub presence_visibility: Option<PresenceVisibility>,
    pub mention_permission: Option<MentionPermission>,
    /// `If-Match`: the version the client last saw.
    pub if_match: Option<i64>,
}

impl PrivacyStore {
    pub(super) fn insert(&mut self, p: Privacy) {
        self.by_member
            .insert((p.server_id.clone(), p.user_uid.clone()), p);
    }

    fn of(&self, server_id: &str, uid: &str) -> Privacy {
        self.by_member
            .get(&(ServerId::from(server_id), UserUid::from(uid)))
            .cloned()
            .unwrap_or_else(|| Privacy {
                server_id: server_id.to_owned().into(),
                user_uid: uid.to_owned().into(),
                presence_visibility: PresenceVisibility::Visible,
                mention_permission: MentionPermission::AllMembers,
                version: 0,
                updated_at: 0,
            })
    }
}

fn item(p: &Privacy) -> PrivacyItem {
    PrivacyItem {
        server_id: p.server_id.to_string(),
        user_uid: p.user_uid.to_string(),
        presence_visibility: p.presence_visibility.as_str(),
        mention_permission: p.mention_permission.as_str(),
        version: p.version,
        updated_at: (p.version > 0).then(|| rfc3339(p.updated_at)),
    }
}

impl Community {
    /// The uid's privacy in `server_id` (the default when it never saved one).
    pub fn privacy_of(&self, server_id: &str, uid: &str) -> Privacy {
        self.privacy.of(server_id, uid)
    }

    /// Whether others are shown the uid's presence in `server_id`, with the version of that
    /// setting (presence orders changes by it).
    pub fn presence_hidden(&self, server_id: &str, uid: &str) -> (bool, i64) {
        let p = self.privacy.of(server_id, uid);
        (
            p.presence_visibility == PresenceVisibility::Hidden,
            p.version,
        )
    }

    /// Whether `author` (with `role` in the server) may mention `target` there. A user may
    /// always mention itself.
    pub(super) fn may_mention(
        &self,
        server_id: &str,
        author: &str,
        role: Role,
        target: &str,
    ) -> bool {
        if author == target {
            return true;
        }
        match self.privacy.of(server_id, target).mention_permission {
            MentionPermission::AllMembers => true,
            MentionPermission::StaffOnly => role.at_least(Role::Moderator),
            MentionPermission::Nobody => false,
        }
    }

    /// `GET /v1/servers/{id}/privacy/me`: the caller's own settings. Reading them joins
    /// nothing; a uid that is not a member sees the defaults it would have.
    pub fn get_privacy(&self, actor: &Actor, server_id: &str) -> Result<PrivacyItem, DomainError> {
        self.directory.server(server_id)?;
        Ok(item(&self.privacy.of(server_id, &actor.user_uid)))
    }

    /// `PUT /v1/servers/{id}/privacy/me` (a member, or a first contact of an open server):
    /// changes the caller's settings if `If-Match` names the current version. A change of
    /// presence visibility reaches the realtime presence at once.
    pub fn put_privacy(
        &mut self,
        actor: &Actor,
        server_id: &str,
        change: PrivacyChange,
        now: Millis,
    ) -> Result<Outcome<PrivacyItem>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        let current = {
            self.directory.server(server_id)?;
            self.privacy.of(server_id, &actor.user_uid)
        };
        if let Some(expected) = change.if_match
            && expected != current.version
        {
            return Err(DomainError::PrivacyConflict {
                current: Box::new(item(&current)),
            });
        }
        let mut records = Vec::new();
        self.admit_inner(
            server_id,
            &actor.user_uid,
            Admission::FirstContact,
            now,
            &mut records,
        )?;
        let mut next = current.clone();
        if let Some(v) = change.presence_visibility {
            next.presence_visibility = v;
        }
        if let Some(m) = change.mention_permission {
            next.mention_permission = m;
        }
        next.version = current.version + 1;
        next.updated_at = now;
        records.push(Record::Privacy(next.clone()));
        let notices = if next.presence_visibility != current.presence_visibility {
            vec![Notice::PresenceVisibility {
                server_id: server_id.to_owned(),
                user_uid: actor.user_uid.to_string(),
                hidden: next.presence_visibility == PresenceVisibility::Hidden,
                version: next.version,
            }]
        } else {
            Vec::new()
        };
        let value = item(&next);
        self.privacy.insert(next);
        Ok(Outcome {
            value,
            records,
            events: Vec::new(),
            notices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::PrivacyChange;
    use crate::domain::community::fixtures::*;
    use crate::domain::community::{Admission, Notice};
    use crate::domain::history::MemoryHistory;
    use crate::domain::model::{HistoryVisibility, MentionPermission, PresenceVisibility, Role};

    fn change(
        presence: Option<PresenceVisibility>,
        mentions: Option<MentionPermission>,
        if_match: Option<i64>,
    ) -> PrivacyChange {
        PrivacyChange {
            presence_visibility: presence,
            mention_permission: mentions,
            if_match,
        }
    }

    #[test]
    fn privacy_versions_conflicts_and_the_presence_notice() {
        let mut c = community(HistoryVisibility::Joined);
        let alice = actor("uid_alice");
        let fresh = c.get_privacy(&alice, "home").unwrap();
        assert_eq!(
            (
                fresh.presence_visibility,
                fresh.mention_permission,
                fresh.version
            ),
            ("visible", "all_members", 0)
        );
        assert_eq!(c.get_privacy(&alice, "nowhere").unwrap_err().status(), 404);
        let hidden = c
            .put_privacy(
                &alice,
                "home",
                change(Some(PresenceVisibility::Hidden), None, Some(0)),
                5,
            )
            .unwrap();
        assert_eq!(hidden.value.version, 1);
        assert_eq!(
            hidden.notices,
            vec![Notice::PresenceVisibility {
                server_id: "home".into(),
                user_uid: "uid_alice".into(),
                hidden: true,
                version: 1,
            }]
        );
        assert!(
            c.current_role("home", "uid_alice").is_some(),
            "a first contact joins"
        );
        let stale = c
            .put_privacy(
                &alice,
                "home",
                change(None, Some(MentionPermission::Nobody), Some(0)),
                6,
            )
            .unwrap_err();
        assert_eq!((stale.status(), stale.code()), (409, "privacy_conflict"));
        assert!(stale.details().unwrap().contains("\"version\":1"));
        let mentions = c
            .put_privacy(
                &alice,
                "home",
                change(None, Some(MentionPermission::Nobody), None),
                7,
            )
            .unwrap();
        assert!(mentions.notices.is_empty(), "presence did not change");
        assert_eq!(c.presence_hidden("home", "uid_alice"), (true, 2));
        assert_eq!(c.presence_hidden("home", "uid_bob"), (false, 0));
    }

    #[test]
    fn a_mention_the_target_does_not_permit_is_no_mention() {
        let mut c = community(HistoryVisibility::Joined);
        let mut history = MemoryHistory::default();
        let owner = actor("uid_owner");
        let channel = text_channel(&mut c, "home", &owner);
        let (bob, carol) = (actor("uid_bob"), actor("uid_carol"));
        for a in [&bob, &carol] {
            c.admit(a, "home", Admission::Connect, 1).unwrap();
        }
        c.put_privacy(
            &carol,
            "home",
            change(None, Some(MentionPermission::StaffOnly), None),
            2,
        )
        .unwrap();
        c.put_privacy(
            &bob,
            "home",
            change(None, Some(MentionPermission::Nobody), None),
            2,
        )
        .unwrap();
        let body = "@uid_bob @uid_carol @here";
        let by_member = post(&mut c, &mut history, &carol, &channel, body, None);
        let tokens: Vec<_> = by_member.mentions.iter().map(|m| m.token.clone()).collect();
        assert_eq!(
            tokens,
            ["@uid_carol", "@here"],
            "bob permits nobody; carol may mention herself"
        );
        let by_bob = post(&mut c, &mut history, &bob, &channel, body, None);
        let tokens: Vec<_> = by_bob.mentions.iter().map(|m| m.token.clone()).collect();
        assert_eq!(tokens, ["@uid_bob", "@here"], "carol is staff only");
        assert_eq!(c.current_role("home", "uid_owner"), Some(Role::Owner));
        let by_owner = post(&mut c, &mut history, &owner, &channel, body, None);
        let tokens: Vec<_> = by_owner.mentions.iter().map(|m| m.token.clone()).collect();
        assert_eq!(
            tokens,
            ["@uid_carol", "@here"],
            "staff may mention carol, nobody bob"
        );
        let suggested = c.resolve_mentions(&carol, &channel, "uid_", 25, 3).unwrap();
        let users: Vec<_> = suggested
            .value
            .results
            .iter()
            .filter(|r| r.kind == "user")
            .map(|r| r.target_id.clone())
            .collect();
        assert!(
            !users.contains(&"uid_bob".to_string()),
            "no suggestion that would not mention: {users:?}"
        );
        assert!(users.contains(&"uid_carol".to_string()));
    }
}
