//! The layout commands of a server (owner or admin): creating channels and categories,
//! renaming and deleting categories, and reordering the whole layout; each emits its event to
//! the server. The layout itself is held by [`super::directory::Directory`].

use std::collections::HashSet;

use super::directory::Seen;
use super::{
    Actor, Audience, Community, Emitted, MAX_CATEGORIES_PER_SERVER, MAX_CHANNELS_PER_SERVER,
    Outcome, Subject,
};
use crate::domain::error::{DomainError, Limit, What};
use crate::domain::model::{
    Category, Channel, ChannelKind, Encryption, HistoryVisibility, Millis, Role,
};
use crate::domain::records::Record;
use crate::domain::views::{
    CategoryCreated, CategoryUpdated, ChannelCreated, ChannelItem, Groups, LayoutUpdated,
};
use crate::domain::{limits, text, views};

impl Community {
    /// `GET /v1/servers/{id}/channels`.
    pub fn channels_of(
        &mut self,
        actor: Option<&Actor>,
        server_id: &str,
        now: Millis,
    ) -> Result<Outcome<Groups>, DomainError> {
        let mut records = Vec::new();
        let role = self.require_readable_server(server_id, actor, now, &mut records)?;
        Ok(Outcome::stored(
            Groups {
                groups: self.directory.layout(server_id, Seen::of(role)),
            },
            records,
        ))
    }

    /// `POST /v1/servers/{id}/channels`; emits `chat.channel.created`.
    #[allow(clippy::too_many_arguments)]
    pub fn create_channel(
        &mut self,
        actor: &Actor,
        server_id: &str,
        name: &str,
        kind: ChannelKind,
        group_id: Option<&str>,
        visibility: Option<HistoryVisibility>,
        encryption: Option<Encryption>,
        now: Millis,
    ) -> Result<Outcome<ChannelCreated>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.directory.server(server_id)?;
        limits::text_field("name", name)?;
        let name = text::normalize_label(name, text::CHANNEL_NAME_MAX_CHARS)
            .map_err(DomainError::InvalidName)?;
        let category = match group_id {
            Some(g) => self
                .directory
                .categories
                .get(g)
                .filter(|c| c.server_id == server_id)
                .ok_or(DomainError::NotFound(What::Group))?,
            None => {
                let mut same_kind: Vec<&Category> = self
                    .directory
                    .categories
                    .values()
                    .filter(|c| c.server_id == server_id && c.kind == kind)
                    .collect();
                same_kind.sort_by_key(|c| (c.position, c.id.clone()));
                *same_kind.first().ok_or(DomainError::GroupRequired)?
            }
        };
        if category.kind != kind {
            return Err(DomainError::GroupKindMismatch {
                channel: kind,
                group: category.kind,
            });
        }
        if kind == ChannelKind::Voice && encryption == Some(Encryption::E2ee) {
            return Err(DomainError::EncryptedVoice);
        }
        let count = self
            .directory
            .channels
            .values()
            .filter(|c| c.server_id == server_id)
            .count();
        if count >= MAX_CHANNELS_PER_SERVER {
            return Err(DomainError::LimitReached(Limit::ChannelsPerServer));
        }
        let category_id = category.id.clone();
        let mut records = self.require_admin(server_id, actor, now)?;
        let position = self
            .directory
            .channels
            .values()
            .filter(|c| c.category_id == category_id)
            .map(|c| c.position + 1)
            .max()
            .unwrap_or(0);
        let channel = Channel {
            id: self.entropy.id("ch").into(),
            server_id: server_id.to_owned().into(),
            category_id: category_id.clone(),
            name,
            kind,
            position,
            history_visibility: visibility.unwrap_or(self.settings().default_history_visibility),
            encryption: encryption.unwrap_or(Encryption::None),
            created_by_uid: Some(actor.user_uid.clone()),
            created_at: now,
            access: Default::default(),
        };
        records.push(Record::Channel(channel.clone()));
        self.directory
            .channels
            .insert(channel.id.clone(), channel.clone());
        let value = ChannelCreated {
            server_id: server_id.to_owned(),
            group_id: category_id,
            channel: ChannelItem::of(&channel),
            created_by_uid: actor.user_uid.clone().into(),
            created_at: views::rfc3339(now),
        };
        let mut event =
            self.server_event(&mut records, server_id, "chat.channel.created", &value, now);
        // Replayed only to whoever may see the channel then (it may have become private).
        event.subject = Subject::Channel {
            channel_id: value.channel.id.clone(),
        };
        Ok(Outcome::published(value, records, vec![event]))
    }

    /// `POST /v1/servers/{id}/categories`; emits `chat.category.created`.
    pub fn create_category(
        &mut self,
        actor: &Actor,
        server_id: &str,
        name: &str,
        kind: ChannelKind,
        now: Millis,
    ) -> Result<Outcome<CategoryCreated>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.directory.server(server_id)?;
        limits::text_field("name", name)?;
        let label = text::normalize_label(name, text::CATEGORY_NAME_MAX_CHARS)
            .map_err(DomainError::InvalidName)?;
        let existing: Vec<&Category> = self
            .directory
            .categories
            .values()
            .filter(|c| c.server_id == server_id)
            .collect();
        if existing.len() >= MAX_CATEGORIES_PER_SERVER {
            return Err(DomainError::LimitReached(Limit::CategoriesPerServer));
        }
        let position = existing.iter().map(|c| c.position + 1).max().unwrap_or(0);
        let mut records = self.require_admin(server_id, actor, now)?;
        let category = Category {
            id: self.entropy.id("cat"),
            server_id: server_id.to_owned().into(),
            label,
            kind,
            position,
            created_by_uid: Some(actor.user_uid.clone()),
            created_at: now,
        };
        records.push(Record::Category(category.clone()));
        self.directory
            .categories
            .insert(category.id.clone(), category.clone());
        let created = |c: &Community, seen: Seen| CategoryCreated {
            server_id: server_id.to_owned(),
            group: c.directory.group_of(&category.id, seen),
            created_by_uid: actor.user_uid.clone().into(),
            created_at: views::rfc3339(now),
        };
        let value = created(self, self.seen_by(server_id, &actor.user_uid));
        let events = self.layout_events(
            &mut records,
            server_id,
            "chat.category.created",
            created,
            now,
        );
        Ok(Outcome::published(value, records, events))
    }

    /// `PUT /v1/servers/{id}/categories/{group_id}`; emits `chat.category.updated`.
    pub fn rename_category(
        &mut self,
        actor: &Actor,
        server_id: &str,
        group_id: &str,
        name: &str,
        now: Millis,
    ) -> Result<Outcome<CategoryUpdated>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.directory.category_in(server_id, group_id)?;
        limits::text_field("name", name)?;
        let label = text::normalize_label(name, text::CATEGORY_NAME_MAX_CHARS)
            .map_err(DomainError::InvalidName)?;
        let mut records = self.require_admin(server_id, actor, now)?;
        let mut category = self.directory.categories[group_id].clone();
        category.label = label;
        records.push(Record::Category(category.clone()));
        self.directory
            .categories
            .insert(category.id.clone(), category);
        let updated = |c: &Community, seen: Seen| CategoryUpdated {
            server_id: server_id.to_owned(),
            group: c.directory.group_of(group_id, seen),
            updated_by_uid: actor.user_uid.clone().into(),
            updated_at: views::rfc3339(now),
        };
        let value = updated(self, self.seen_by(server_id, &actor.user_uid));
        let events = self.layout_events(
            &mut records,
            server_id,
            "chat.category.updated",
            updated,
            now,
        );
        Ok(Outcome::published(value, records, events))
    }

    /// `DELETE /v1/servers/{id}/categories/{group_id}`: its channels move to the first other
    /// group of the same kind (refused when there is none); emits `chat.channel.layout.updated`.
    pub fn delete_category(
        &mut self,
        actor: &Actor,
        server_id: &str,
        group_id: &str,
        now: Millis,
    ) -> Result<Outcome<LayoutUpdated>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        let kind = self.directory.category_in(server_id, group_id)?.kind;
        let mut others: Vec<&Category> = self
            .directory
            .categories
            .values()
            .filter(|c| c.server_id == server_id && c.id != group_id && c.kind == kind)
            .collect();
        others.sort_by_key(|c| (c.position, c.id.clone()));
        let heir = others.first().map(|c| c.id.clone());
        let orphans: Vec<Channel> = {
            let mut v: Vec<Channel> = self
                .directory
                .channels
                .values()
                .filter(|c| c.category_id == group_id)
                .cloned()
                .collect();
            v.sort_by_key(|c| (c.position, c.id.clone()));
            v
        };
        if !orphans.is_empty() && heir.is_none() {
            return Err(DomainError::CategoryNotEmpty);
        }
        let mut records = self.require_admin(server_id, actor, now)?;
        if let Some(heir) = heir {
            let next = self
                .directory
                .channels
                .values()
                .filter(|c| c.category_id == heir)
                .map(|c| c.position + 1)
                .max()
                .unwrap_or(0);
            for (offset, mut ch) in orphans.into_iter().enumerate() {
                ch.category_id = heir.clone();
                ch.position = next + offset as i64;
                records.push(Record::Channel(ch.clone()));
                self.directory.channels.insert(ch.id.clone(), ch);
            }
        }
        records.push(Record::DeleteCategory {
            id: group_id.to_owned(),
        });
        self.directory.categories.remove(group_id);
        self.layout_event(actor, server_id, now, records)
    }

    pub(super) fn layout_event(
        &mut self,
        actor: &Actor,
        server_id: &str,
        now: Millis,
        mut records: Vec<Record>,
    ) -> Result<Outcome<LayoutUpdated>, DomainError> {
        let updated = |c: &Community, seen: Seen| LayoutUpdated {
            server_id: server_id.to_owned(),
            groups: c.directory.layout(server_id, seen),
            updated_by_uid: actor.user_uid.clone().into(),
            updated_at: views::rfc3339(now),
        };
        let value = updated(self, self.seen_by(server_id, &actor.user_uid));
        let events = self.layout_events(
            &mut records,
            server_id,
            "chat.channel.layout.updated",
            updated,
            now,
        );
        Ok(Outcome::published(value, records, events))
    }

    /// `PUT /v1/servers/{id}/channels/{channel_id}/permissions` (an admin or the owner): who
    /// sees the channel and who posts in it (`view_min_role`, `post_min_role`: `null` or
    /// moderator, admin, owner) and, for voice, whether members speak. Audited; the layout goes
    /// out again as each role sees it, and sockets that may no longer see the channel stop
    /// following it.
    pub fn set_channel_access(
        &mut self,
        actor: &Actor,
        server_id: &str,
        channel_id: &str,
        access: crate::domain::model::ChannelAccess,
        now: Millis,
    ) -> Result<Outcome<LayoutUpdated>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        let mut channel = self.directory.channel(channel_id)?.clone();
        if channel.server_id != server_id {
            return Err(DomainError::NotFound(What::Channel));
        }
        let staff_only = |r: Option<Role>| r.is_none_or(|r| r.at_least(Role::Moderator));
        if !staff_only(access.view_min_role) || !staff_only(access.post_min_role) {
            return Err(DomainError::InvalidAction(
                "view_min_role and post_min_role are null (everyone) or moderator, admin or owner",
            ));
        }
        let mut records = self.require_admin(server_id, actor, now)?;
        channel.access = access;
        records.push(Record::Channel(channel.clone()));
        let value = crate::domain::views::ChannelItem::of(&channel);
        self.audit(
            &mut records,
            server_id,
            None,
            &actor.user_uid,
            "channel_permissions_updated",
            &value,
            now,
        );
        let allowed = match self.channel_audience(&channel) {
            Audience::Users(uids) => Some(uids),
            _ => None,
        };
        self.directory.channels.insert(channel.id.clone(), channel);
        let mut out = self.layout_event(actor, server_id, now, records)?;
        if let Some(allowed) = allowed {
            out.notices.push(super::Notice::ChannelRestricted {
                server_id: server_id.to_owned(),
                channel_id: channel_id.to_owned(),
                allowed,
            });
        }
        Ok(out)
    }

    /// How `uid` sees the server's layout (a non-member as a member would).
    fn seen_by(&self, server_id: &str, uid: &str) -> Seen {
        Seen::By(self.current_role(server_id, uid).unwrap_or(Role::Member))
    }

    /// `kind` for the server, its payload as each reader sees the layout: one event for
    /// everyone while no channel of the server is private; otherwise one per run of roles
    /// that sees the same, to the current members of those roles only (and replayed to them
    /// only), so a private channel is never named to those who may not see it.
    fn layout_events<T: serde::Serialize>(
        &mut self,
        records: &mut Vec<Record>,
        server_id: &str,
        kind: &'static str,
        payload: impl Fn(&Community, Seen) -> T,
        now: Millis,
    ) -> Vec<Emitted> {
        let private = self
            .directory
            .channels
            .values()
            .any(|c| c.server_id == server_id && c.access.view_min_role.is_some());
        if !private {
            let value = payload(self, Seen::By(Role::Member));
            return vec![self.server_event(records, server_id, kind, &value, now)];
        }
        let mut tiers: Vec<(Vec<Role>, String)> = Vec::new();
        // From the lowest rank up, so each run of roles that see the same is contiguous.
        for role in Role::ALL.iter().rev().copied() {
            let text = super::encode(&payload(self, Seen::By(role)));
            match tiers.last_mut() {
                Some((roles, seen)) if *seen == text => roles.push(role),
                _ => tiers.push((vec![role], text)),
            }
        }
        tiers
            .into_iter()
            .map(|(roles, _)| {
                let value = payload(self, Seen::By(roles[0]));
                let mut event = self.server_event(records, server_id, kind, &value, now);
                event.audience = Audience::Users(self.members_with(server_id, &roles));
                event.subject = Subject::Roles(roles);
                event
            })
            .collect()
    }

    /// The current members of `server_id` whose role is one of `roles`.
    pub(super) fn members_with(&self, server_id: &str, roles: &[Role]) -> Vec<String> {
        let mut uids: Vec<String> = self
            .roster
            .server_users
            .get(server_id)
            .into_iter()
            .flatten()
            .filter(|uid| {
                self.roster
                    .current_role(server_id, uid)
                    .is_some_and(|role| roles.contains(&role))
            })
            .map(|uid| uid.to_string())
            .collect();
        uids.sort_unstable();
        uids
    }

    /// Who receives the live events of `channel`: the whole server, or for a private channel
    /// the current members who may see it.
    pub(super) fn channel_audience(&self, channel: &Channel) -> Audience {
        match channel.access.view_min_role {
            None => Audience::Server,
            Some(min) => {
                Audience::Users(self.members_with(&channel.server_id, &Role::at_least_all(min)))
            }
        }
    }

    /// `PUT /v1/servers/{id}/channel-layout`. Listed groups take the order given, groups not
    /// listed keep their order after them and must end up empty; every channel of the server
    /// must appear exactly once, in a group of its kind.
    pub fn set_layout(
        &mut self,
        actor: &Actor,
        server_id: &str,
        groups: &[(String, Vec<String>)],
        now: Millis,
    ) -> Result<Outcome<LayoutUpdated>, DomainError> {
        limits::check_layout_size(groups.iter().map(|(_, ids)| ids.as_slice()))?;
        self.limiter.check(&actor.user_uid, now)?;
        self.directory.server(server_id)?;
        let bad = DomainError::InvalidLayout;
        let mut seen_groups = HashSet::new();
        let mut seen_channels = HashSet::new();
        for (group_id, channel_ids) in groups {
            let cat = self
                .directory
                .categories
                .get(group_id)
                .filter(|c| c.server_id == server_id)
                .ok_or_else(|| bad(format!("unknown group {group_id}")))?;
            if !seen_groups.insert(group_id.as_str()) {
                return Err(bad(format!("group {group_id} listed twice")));
            }
            for id in channel_ids {
                let ch = self
                    .directory
                    .channels
                    .get(id.as_str())
                    .filter(|c| c.server_id == server_id)
                    .ok_or_else(|| bad(format!("unknown channel {id}")))?;
                if !seen_channels.insert(id.as_str()) {
                    return Err(bad(format!("channel {id} listed twice")));
                }
                if ch.kind != cat.kind {
                    return Err(bad(format!(
                        "channel {id} is {} but group {group_id} is {}",
                        ch.kind.as_str(),
                        cat.kind.as_str()
                    )));
                }
            }
        }
        let missing = self
            .directory
            .channels
            .values()
            .filter(|c| c.server_id == server_id && !seen_channels.contains(c.id.as_str()))
            .count();
        if missing > 0 {
            return Err(bad(format!(
                "{missing} channel(s) of the server are missing from the layout"
            )));
        }
        let mut records = self.require_admin(server_id, actor, now)?;
        let mut unlisted: Vec<Category> = self
            .directory
            .categories
            .values()
            .filter(|c| c.server_id == server_id && !seen_groups.contains(c.id.as_str()))
            .cloned()
            .collect();
        unlisted.sort_by_key(|c| (c.position, c.id.clone()));
        let order = groups
            .iter()
            .map(|(g, _)| g.clone())
            .chain(unlisted.into_iter().map(|c| c.id));
        for (position, group_id) in order.enumerate() {
            let mut cat = self.directory.categories[&group_id].clone();
            if cat.position != position as i64 {
                cat.position = position as i64;
                records.push(Record::Category(cat.clone()));
                self.directory.categories.insert(group_id, cat);
            }
        }
        for (group_id, channel_ids) in groups {
            for (position, id) in channel_ids.iter().enumerate() {
                let mut ch = self.directory.channels[id.as_str()].clone();
                if ch.category_id != *group_id || ch.position != position as i64 {
                    ch.category_id = group_id.clone();
                    ch.position = position as i64;
                    records.push(Record::Channel(ch.clone()));
                    self.directory.channels.insert(id.clone().into(), ch);
                }
            }
        }
        self.layout_event(actor, server_id, now, records)
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::community::fixtures::*;
    use crate::domain::model::{ChannelKind, HistoryVisibility};

    #[test]
    fn layout_changes_need_an_admin_and_emit_events() {
        let mut c = community(HistoryVisibility::Joined);
        let member = actor("uid_member");
        let owner = actor("uid_owner");
        let refused = c
            .create_category(&member, "home", "Games", ChannelKind::Text, 5)
            .unwrap_err();
        assert_eq!((refused.status(), refused.code()), (403, "forbidden"));
        let settings_refused = c
            .update_settings(
                &member,
                "home",
                &crate::domain::community::SettingsChange {
                    display_name: Some("Mine"),
                    ..Default::default()
                },
                5,
            )
            .unwrap_err();
        assert_eq!(settings_refused.status(), 403);

        let cat = c
            .create_category(&owner, "home", "Games", ChannelKind::Text, 5)
            .unwrap();
        assert_eq!(cat.events[0].kind, "chat.category.created");
        let group_id = cat.value.group.id.clone();
        let ch = c
            .create_channel(
                &owner,
                "home",
                "chess",
                ChannelKind::Text,
                Some(&group_id),
                None,
                None,
                6,
            )
            .unwrap();
        assert_eq!(ch.events[0].kind, "chat.channel.created");
        assert_eq!(ch.value.channel.history_visibility, "joined");
        let wrong_kind = c
            .create_channel(
                &owner,
                "home",
                "lobby",
                ChannelKind::Voice,
                Some(&group_id),
                None,
                None,
                6,
            )
            .unwrap_err();
        assert_eq!(wrong_kind.code(), "group_kind_mismatch");
        let renamed = c
            .rename_category(&owner, "home", &group_id, "Board games", 7)
            .unwrap();
        assert_eq!(renamed.value.group.label, "Board games");
        assert_eq!(renamed.events[0].kind, "chat.category.updated");

        // Event ids of a server increase by one.
        let ids: Vec<u64> = [&cat.events[0], &ch.events[0], &renamed.events[0]]
            .iter()
            .map(|e| e.event_id.unwrap().0)
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);

        // A layout must list every channel exactly once, in groups of its kind.
        let groups = c.channels_of(Some(&owner), "home", 8).unwrap().value.groups;
        let text_group = groups
            .iter()
            .find(|g| g.kind == "text" && g.id != group_id)
            .unwrap()
            .id
            .clone();
        let all_text: Vec<String> = groups
            .iter()
            .filter(|g| g.kind == "text")
            .flat_map(|g| g.channels.iter().map(|c| c.id.clone()))
            .collect();
        let voice_group = groups.iter().find(|g| g.kind == "voice").unwrap();
        let voice_ids: Vec<String> = voice_group.channels.iter().map(|c| c.id.clone()).collect();
        let dropped = c
            .set_layout(
                &owner,
                "home",
                &[(group_id.clone(), vec![all_text[0].clone()])],
                9,
            )
            .unwrap_err();
        assert_eq!(dropped.code(), "invalid_layout");
        let duplicated = c
            .set_layout(
                &owner,
                "home",
                &[
                    (
                        group_id.clone(),
                        vec![
                            all_text[0].clone(),
                            all_text[0].clone(),
                            all_text[1].clone(),
                        ],
                    ),
                    (voice_group.id.clone(), voice_ids.clone()),
                ],
                9,
            )
            .unwrap_err();
        assert_eq!(duplicated.code(), "invalid_layout");
        let invented = c
            .set_layout(
                &owner,
                "home",
                &[(group_id.clone(), vec!["ch_nope".into()])],
                9,
            )
            .unwrap_err();
        assert_eq!(invented.code(), "invalid_layout");
        let moved = c
            .set_layout(
                &owner,
                "home",
                &[
                    (group_id.clone(), all_text.clone()),
                    (voice_group.id.clone(), voice_ids),
                    (text_group.clone(), vec![]),
                ],
                9,
            )
            .unwrap();
        assert_eq!(moved.value.groups[0].id, group_id);
        assert_eq!(moved.value.groups[0].channels.len(), 2);
        assert_eq!(moved.events[0].kind, "chat.channel.layout.updated");
        // Deleting the now-empty group works; deleting the last text group with channels does not.
        c.delete_category(&owner, "home", &text_group, 10).unwrap();
        let last = c
            .delete_category(&owner, "home", &group_id, 10)
            .unwrap_err();
        assert_eq!(last.code(), "category_not_empty");
    }
}
