//! The server directory: every server with its categories and channels (the layout) and the
//! servers' ownership claim tokens, and the commands on servers themselves: the default
//! server at start, creating a server, claiming its ownership, its settings and the listing
//! of `GET /v1/servers`. The layout commands are in [`super::layout`].

use crate::domain::ids::{ChannelId, ServerId};
use std::collections::HashMap;

use super::{
    Actor, Admission, CLAIM_TOKEN_TTL_MS, Community, DEFAULT_SERVER_CLAIM_TTL_MS, DirectoryKey,
    MAX_SERVERS_CREATED_PER_USER, Outcome,
};
use crate::domain::error::{DomainError, Limit, What};
use crate::domain::model::{
    BANNER_PRESETS, Category, Channel, ChannelKind, ClaimToken, Encryption, HistoryVisibility,
    JoinPolicy, Membership, Millis, Role, Server,
};
use crate::domain::records::Record;
use crate::domain::views::{
    ChannelItem, Claimed, DirectoryItem, Group, OwnershipClaim, ServerCreated, SettingsUpdated,
};
use crate::domain::{limits, text, views};

/// What a `PUT /v1/servers/{id}/settings` changes (`None`: leave it).
#[derive(Debug, Clone, Copy, Default)]
pub struct SettingsChange<'a> {
    pub display_name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub banner_preset: Option<&'a str>,
    pub join_policy: Option<JoinPolicy>,
}

/// Servers, categories, channels and claim tokens, by id (claim tokens by hash).
#[derive(Debug, Default)]
pub struct Directory {
    pub(super) servers: HashMap<ServerId, Server>,
    pub(super) categories: HashMap<String, Category>,
    pub(super) channels: HashMap<ChannelId, Channel>,
    pub(super) claim_tokens: HashMap<String, ClaimToken>,
}

/// Who a layout is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// An anonymous reader: `public` channels only.
    Anonymous,
    /// A member of this role.
    By(Role),
}

impl Seen {
    pub(super) fn of(role: Option<Role>) -> Seen {
        role.map_or(Seen::Anonymous, Seen::By)
    }
}

impl Directory {
    pub(super) fn server(&self, server_id: &str) -> Result<&Server, DomainError> {
        self.servers
            .get(server_id)
            .ok_or(DomainError::NotFound(What::Server))
    }

    pub(super) fn channel(&self, channel_id: &str) -> Result<&Channel, DomainError> {
        self.channels
            .get(channel_id)
            .ok_or(DomainError::NotFound(What::Channel))
    }

    pub(super) fn has_public_channel(&self, server_id: &str) -> bool {
        self.channels
            .values()
            .any(|c| c.server_id == server_id && c.history_visibility == HistoryVisibility::Public)
    }

    /// The server's groups in order, each with its channels in order, as `seen` sees them: an
    /// anonymous reader only `public` channels, a member the channels its role may view (a
    /// private channel is not listed to the others). A group is left out when it has channels
    /// but none the reader sees: its name says nothing the reader may see. An empty group
    /// stays (the client shows it, and an owner reloading anonymously must still find it to
    /// delete it).
    pub(super) fn layout(&self, server_id: &str, seen: Seen) -> Vec<Group> {
        let mut cats: Vec<&Category> = self
            .categories
            .values()
            .filter(|c| c.server_id == server_id)
            .collect();
        cats.sort_by(|a, b| (a.position, &a.id).cmp(&(b.position, &b.id)));
        let mut channels: Vec<&Channel> = self
            .channels
            .values()
            .filter(|c| c.server_id == server_id)
            .collect();
        channels.sort_by(|a, b| (a.position, &a.id).cmp(&(b.position, &b.id)));
        let visible = |c: &Channel| match seen {
            Seen::Anonymous => {
                c.history_visibility == HistoryVisibility::Public && c.access.viewable_by(None)
            }
            Seen::By(role) => c.access.viewable_by(Some(role)),
        };
        cats.into_iter()
            .filter_map(|cat| {
                let all: Vec<&&Channel> = channels
                    .iter()
                    .filter(|c| c.category_id == cat.id)
                    .collect();
                let shown: Vec<ChannelItem> = all
                    .iter()
                    .filter(|c| visible(c))
                    .map(|c| ChannelItem::of(c))
                    .collect();
                (all.is_empty() || !shown.is_empty()).then(|| Group {
                    id: cat.id.clone(),
                    label: cat.label.clone(),
                    kind: cat.kind.as_str(),
                    channels: shown,
                })
            })
            .collect()
    }

    pub(super) fn group_of(&self, category_id: &str, seen: Seen) -> Group {
        let cat = &self.categories[category_id];
        self.layout(&cat.server_id, seen)
            .into_iter()
            .find(|g| g.id == category_id)
            .expect("category is in its server's layout")
    }

    pub(super) fn category_in(
        &self,
        server_id: &str,
        group_id: &str,
    ) -> Result<&Category, DomainError> {
        self.server(server_id)?;
        self.categories
            .get(group_id)
            .filter(|c| c.server_id == server_id)
            .ok_or(DomainError::NotFound(What::Group))
    }
}

impl Community {
    pub(super) fn directory_item(&self, server: &Server) -> DirectoryItem {
        DirectoryItem {
            server_id: server.id.clone().into(),
            display_name: server.display_name.clone(),
            description: server.description.clone(),
            banner_preset: server.banner_preset.clone(),
            icon_text: text::icon_text(&server.display_name),
            trust_state: if server.id == self.settings().default_server_id {
                "verified"
            } else {
                "unverified"
            },
            identity_handshake_strategy: self.settings().handshake_strategy,
            user_identifier_policy: "either",
        }
    }

    /// `GET /v1/servers`, whole (see [`Community::directory_page`]).
    pub fn directory(&self, actor: Option<&Actor>) -> Vec<DirectoryItem> {
        self.directory_servers(actor)
            .into_iter()
            .map(|s| self.directory_item(s))
            .collect()
    }

    /// `GET /v1/servers` one page at a time: at most `limit` entries after `after` (the key
    /// of the last entry of the previous page), in directory order (the default server first,
    /// then by creation), and the key to continue after when more follow.
    pub fn directory_page(
        &self,
        actor: Option<&Actor>,
        after: Option<&DirectoryKey>,
        limit: usize,
    ) -> (Vec<DirectoryItem>, Option<DirectoryKey>) {
        let default_id = &self.settings().default_server_id;
        let key = |s: &Server| DirectoryKey {
            after_default: s.id != *default_id,
            created_at: s.created_at,
            server_id: s.id.clone().into(),
        };
        let mut page: Vec<&Server> = self
            .directory_servers(actor)
            .into_iter()
            .filter(|s| after.is_none_or(|a| key(s) > *a))
            .take(limit.saturating_add(1))
            .collect();
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map(|s| key(s))
        });
        let items = page.iter().map(|s| self.directory_item(s)).collect();
        (items, next.flatten())
    }

    pub(super) fn directory_servers(&self, actor: Option<&Actor>) -> Vec<&Server> {
        let default_id = &self.settings().default_server_id;
        let mut listed: Vec<&Server> = self
            .directory
            .servers
            .values()
            .filter(|s| match actor {
                // An invite-only server is listed to its members only: nobody else can join
                // it by opening it.
                None => s.discoverable && s.join_policy == JoinPolicy::Open,
                Some(a) => match self.roster.membership(&s.id, &a.user_uid) {
                    Some(m) => m.is_current(),
                    None => s.discoverable && s.join_policy == JoinPolicy::Open,
                },
            })
            .collect();
        if let (Some(a), Some(default)) = (actor, self.directory.servers.get(default_id.as_str()))
            && default.join_policy == JoinPolicy::Open
        {
            // A uid that never joined anything always sees the default server.
            let joined_any = self
                .roster
                .user_servers
                .get(a.user_uid.as_str())
                .is_some_and(|s| !s.is_empty());
            if !joined_any && !listed.iter().any(|s| s.id == *default_id) {
                listed.push(default);
            }
        }
        listed.sort_by(|a, b| {
            (a.id != *default_id, a.created_at, &a.id).cmp(&(
                b.id != *default_id,
                b.created_at,
                &b.id,
            ))
        });
        listed
    }

    /// Creates a server with its seed layout: a text group with `general` and a voice group
    /// with one voice channel.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn seed_server(
        &mut self,
        id: String,
        display_name: String,
        description: String,
        banner_preset: String,
        created_by: Option<String>,
        now: Millis,
        records: &mut Vec<Record>,
    ) -> Server {
        let server = Server {
            id: id.clone().into(),
            display_name,
            description,
            banner_preset,
            discoverable: true,
            join_policy: JoinPolicy::Open,
            owner_uid: None,
            created_by_uid: created_by.clone().map(Into::into),
            created_at: now,
            updated_by_uid: created_by.clone().map(Into::into),
            updated_at: now,
        };
        records.push(Record::Server(server.clone()));
        self.directory
            .servers
            .insert(id.clone().into(), server.clone());
        let visibility = self.settings().default_history_visibility;
        for (position, (label, kind, channel)) in [
            ("Text Channels", ChannelKind::Text, "general"),
            ("Voice Channels", ChannelKind::Voice, "General"),
        ]
        .into_iter()
        .enumerate()
        {
            let category = Category {
                id: self.entropy.id("cat"),
                server_id: id.clone().into(),
                label: label.to_owned(),
                kind,
                position: position as i64,
                created_by_uid: created_by.clone().map(Into::into),
                created_at: now,
            };
            let channel = Channel {
                id: self.entropy.id("ch").into(),
                server_id: id.clone().into(),
                category_id: category.id.clone(),
                name: channel.to_owned(),
                kind,
                position: 0,
                history_visibility: visibility,
                encryption: Encryption::None,
                created_by_uid: created_by.clone().map(Into::into),
                created_at: now,
                access: Default::default(),
            };
            records.push(Record::Category(category.clone()));
            records.push(Record::Channel(channel.clone()));
            self.directory
                .categories
                .insert(category.id.clone(), category);
            self.directory.channels.insert(channel.id.clone(), channel);
        }
        server
    }

    pub(super) fn new_claim_token(
        &mut self,
        server_id: &str,
        ttl: Millis,
        now: Millis,
        records: &mut Vec<Record>,
    ) -> (String, Millis) {
        let token = self.entropy.token("occ_");
        let claim = ClaimToken {
            token_hash: crate::auth::hash_token(&token),
            server_id: server_id.to_owned().into(),
            expires_at: now + ttl,
            used_at: None,
        };
        records.push(Record::ClaimToken(claim.clone()));
        self.directory
            .claim_tokens
            .insert(claim.token_hash.clone(), claim);
        (token, now + ttl)
    }

    pub(super) fn set_owner(
        &mut self,
        server_id: &str,
        uid: &str,
        now: Millis,
        records: &mut Vec<Record>,
    ) {
        let mut server = self.directory.servers[server_id].clone();
        let previous = server.owner_uid.replace(uid.to_owned().into());
        server.updated_at = now;
        records.push(Record::Server(server.clone()));
        self.directory
            .servers
            .insert(server_id.to_owned().into(), server);
        if let Some(prev) = previous.filter(|p| p.as_str() != uid)
            && let Some(m) = self.roster.membership(server_id, &prev).cloned()
        {
            let m = Membership {
                role: Role::Admin,
                ..m
            };
            records.push(Record::Membership(m.clone()));
            self.roster.index(m);
        }
        let _ = self.admit_inner(server_id, uid, Admission::Connect, now, records);
        let m = self
            .roster
            .membership(server_id, uid)
            .cloned()
            .expect("admitted above");
        if m.role != Role::Owner {
            let m = Membership {
                role: Role::Owner,
                ..m
            };
            records.push(Record::Membership(m.clone()));
            self.roster.index(m);
        }
    }

    /// At every start: creates and seeds the default server if it does not exist, and applies
    /// `OPENCHAT_DEFAULT_SERVER_OWNER_UID`. The value is the claim token to log, when the server
    /// was just created without a configured owner.
    pub fn bootstrap_default_server(
        &mut self,
        display_name: &str,
        owner_uid: Option<&str>,
        now: Millis,
    ) -> Outcome<Option<String>> {
        let id = self.settings().default_server_id.clone();
        let mut records = Vec::new();
        let mut token = None;
        if !self.directory.servers.contains_key(id.as_str()) {
            self.seed_server(
                id.clone(),
                display_name.to_owned(),
                String::new(),
                "ocean".to_owned(),
                None,
                now,
                &mut records,
            );
            if owner_uid.is_none() {
                token = Some(
                    self.new_claim_token(&id, DEFAULT_SERVER_CLAIM_TTL_MS, now, &mut records)
                        .0,
                );
            }
        }
        if let Some(owner) = owner_uid
            && self.directory.servers[id.as_str()].owner_uid.as_deref() != Some(owner)
        {
            self.set_owner(&id, owner, now, &mut records);
        }
        Outcome::stored(token, records)
    }

    /// `POST /v1/servers`.
    pub fn create_server(
        &mut self,
        actor: &Actor,
        display_name: &str,
        description: &str,
        banner_preset: &str,
        now: Millis,
    ) -> Result<Outcome<ServerCreated>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        if !self.settings().allow_server_creation {
            return Err(DomainError::ServerCreationDisabled);
        }
        limits::text_field("display_name", display_name)?;
        limits::text_field("description", description)?;
        limits::text_field("banner_preset", banner_preset)?;
        let display_name = text::normalize_label(display_name, text::SERVER_NAME_MAX_CHARS)
            .map_err(DomainError::InvalidDisplayName)?;
        let description =
            text::normalize_description(description).map_err(DomainError::InvalidDescription)?;
        let banner = check_banner(banner_preset)?;
        let created = self
            .directory
            .servers
            .values()
            .filter(|s| s.created_by_uid.as_deref() == Some(&actor.user_uid))
            .count();
        if created >= MAX_SERVERS_CREATED_PER_USER {
            return Err(DomainError::LimitReached(Limit::ServersPerUser));
        }
        let mut records = Vec::new();
        let id = self.entropy.id("srv");
        let server = self.seed_server(
            id,
            display_name,
            description,
            banner,
            Some(actor.user_uid.clone().into()),
            now,
            &mut records,
        );
        self.admit_inner(
            &server.id,
            &actor.user_uid,
            Admission::Connect,
            now,
            &mut records,
        )?;
        let (token, expires_at) =
            self.new_claim_token(&server.id, CLAIM_TOKEN_TTL_MS, now, &mut records);
        Ok(Outcome::stored(
            ServerCreated {
                server: self.directory_item(&server),
                created_by_uid: actor.user_uid.clone().into(),
                created_at: views::rfc3339(now),
                ownership_claim: OwnershipClaim {
                    token,
                    expires_at: views::rfc3339(expires_at),
                },
            },
            records,
        ))
    }

    /// `POST /v1/servers/{id}/ownership:claim`: the token alone authorizes.
    pub fn claim_ownership(
        &mut self,
        actor: &Actor,
        server_id: &str,
        token: &str,
        now: Millis,
    ) -> Result<Outcome<Claimed>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.directory.server(server_id)?;
        let hash = crate::auth::hash_token(token);
        let claim = self
            .directory
            .claim_tokens
            .get(&hash)
            .ok_or(DomainError::InvalidClaimToken)?;
        if claim.server_id != server_id || claim.used_at.is_some() {
            return Err(DomainError::InvalidClaimToken);
        }
        if claim.expires_at <= now {
            return Err(DomainError::ClaimTokenExpired);
        }
        let mut claim = claim.clone();
        claim.used_at = Some(now);
        let mut records = vec![Record::ClaimToken(claim)];
        self.directory.claim_tokens.remove(&hash);
        self.set_owner(server_id, &actor.user_uid, now, &mut records);
        Ok(Outcome::stored(
            Claimed {
                server_id: server_id.to_owned(),
                owner_user_uid: actor.user_uid.clone().into(),
                claimed_at: views::rfc3339(now),
            },
            records,
        ))
    }

    /// `GET /v1/servers/{id}/settings`.
    pub fn settings_of(
        &mut self,
        actor: &Actor,
        server_id: &str,
        now: Millis,
    ) -> Result<Outcome<views::Settings>, DomainError> {
        let mut records = Vec::new();
        self.admit_inner(
            server_id,
            &actor.user_uid,
            Admission::FirstContact,
            now,
            &mut records,
        )?;
        let s = &self.directory.servers[server_id];
        Ok(Outcome::stored(
            views::Settings {
                server_id: s.id.clone().into(),
                display_name: s.display_name.clone(),
                description: s.description.clone(),
                banner_preset: s.banner_preset.clone(),
                join_policy: s.join_policy,
            },
            records,
        ))
    }

    /// `PUT /v1/servers/{id}/settings` (owner or admin); emits `chat.server.updated`.
    pub fn update_settings(
        &mut self,
        actor: &Actor,
        server_id: &str,
        change: &SettingsChange<'_>,
        now: Millis,
    ) -> Result<Outcome<SettingsUpdated>, DomainError> {
        let SettingsChange {
            display_name,
            description,
            banner_preset,
            join_policy,
        } = *change;
        self.limiter.check(&actor.user_uid, now)?;
        self.directory.server(server_id)?;
        limits::optional_text_field("display_name", display_name)?;
        limits::optional_text_field("description", description)?;
        limits::optional_text_field("banner_preset", banner_preset)?;
        let display_name = display_name
            .map(|n| text::normalize_label(n, text::SERVER_NAME_MAX_CHARS))
            .transpose()
            .map_err(DomainError::InvalidDisplayName)?;
        let description = description
            .map(text::normalize_description)
            .transpose()
            .map_err(DomainError::InvalidDescription)?;
        let banner = banner_preset.map(check_banner).transpose()?;
        let mut records = self.require_admin(server_id, actor, now)?;
        let mut server = self.directory.servers[server_id].clone();
        if let Some(n) = display_name {
            server.display_name = n;
        }
        if let Some(d) = description {
            server.description = d;
        }
        if let Some(b) = banner {
            server.banner_preset = b;
        }
        if let Some(p) = join_policy {
            server.join_policy = p;
        }
        server.updated_at = now;
        server.updated_by_uid = Some(actor.user_uid.clone());
        records.push(Record::Server(server.clone()));
        let value = SettingsUpdated {
            server_id: server.id.clone().into(),
            display_name: server.display_name.clone(),
            description: server.description.clone(),
            banner_preset: server.banner_preset.clone(),
            join_policy: server.join_policy,
            updated_by_uid: actor.user_uid.clone().into(),
            updated_at: views::rfc3339(now),
        };
        self.directory.servers.insert(server.id.clone(), server);
        let event = self.server_event(&mut records, server_id, "chat.server.updated", &value, now);
        Ok(Outcome::published(value, records, vec![event]))
    }
}

fn check_banner(preset: &str) -> Result<String, DomainError> {
    let preset = preset.trim();
    if preset.is_empty() {
        return Ok("ocean".to_owned());
    }
    if BANNER_PRESETS.contains(&preset) {
        Ok(preset.to_owned())
    } else {
        Err(DomainError::InvalidBannerPreset)
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::community::fixtures::*;
    use crate::domain::community::{Actor, Admission, CLAIM_TOKEN_TTL_MS, Community, Settings};
    use crate::domain::entropy::Entropy;
    use crate::domain::model::{HistoryVisibility, Role};
    use crate::domain::records::Snapshot;

    #[test]
    fn the_default_server_is_seeded_with_a_text_and_a_voice_group() {
        let mut c = community(HistoryVisibility::Joined);
        let groups = c
            .channels_of(Some(&actor("uid_a")), "home", 1)
            .unwrap()
            .value
            .groups;
        let shape: Vec<(&str, Vec<(&str, &str)>)> = groups
            .iter()
            .map(|g| {
                (
                    g.kind,
                    g.channels
                        .iter()
                        .map(|ch| (ch.name.as_str(), ch.kind))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("text", vec![("general", "text")]),
                ("voice", vec![("General", "voice")])
            ]
        );
        // Bootstrapping again changes nothing.
        let again = c.bootstrap_default_server("Other name", Some("uid_owner"), 2_000);
        assert!(again.records.is_empty());
        assert_eq!(c.current_role("home", "uid_owner"), Some(Role::Owner));
    }

    #[test]
    fn without_a_configured_owner_the_first_start_yields_a_claim_token_that_works_once() {
        let mut c = Community::new(
            settings(HistoryVisibility::Joined),
            Snapshot::default(),
            seeded(),
        );
        let token = c
            .bootstrap_default_server("Home", None, 1)
            .value
            .expect("claim token");
        let claimer = actor("uid_claimer");
        assert_eq!(
            c.claim_ownership(&claimer, "home", "occ_wrong", 2)
                .unwrap_err()
                .code(),
            "invalid_claim_token"
        );
        let claimed = c
            .claim_ownership(&claimer, "home", &token, 2)
            .unwrap()
            .value;
        assert_eq!(claimed.owner_user_uid, "uid_claimer");
        assert_eq!(c.current_role("home", "uid_claimer"), Some(Role::Owner));
        let replay = c
            .claim_ownership(&actor("uid_thief"), "home", &token, 3)
            .unwrap_err();
        assert_eq!(replay.code(), "invalid_claim_token");
    }

    #[test]
    fn a_created_server_is_claimed_by_a_different_uid_with_its_token_and_expires() {
        let mut c = community(HistoryVisibility::Joined);
        let creator = actor("uid_creator");
        let created = c
            .create_server(&creator, "  Rust  Club ", "hello", "forest", 100)
            .unwrap();
        let server_id = created.value.server.server_id.clone();
        assert_eq!(created.value.server.display_name, "Rust  Club");
        assert_eq!(created.value.server.banner_preset, "forest");
        assert_eq!(created.value.server.icon_text.chars().count(), 2);
        // The creator is a plain member until someone claims.
        assert_eq!(
            c.current_role(&server_id, "uid_creator"),
            Some(Role::Member)
        );
        let other = actor("uid_other");
        let token = created.value.ownership_claim.token.clone();
        // Expired tokens are refused.
        let late = c
            .claim_ownership(&other, &server_id, &token, 100 + CLAIM_TOKEN_TTL_MS)
            .unwrap_err();
        assert_eq!(late.code(), "claim_token_expired");
        c.claim_ownership(&other, &server_id, &token, 200).unwrap();
        assert_eq!(c.current_role(&server_id, "uid_other"), Some(Role::Owner));
        // Unknown presets and disabled creation are refused.
        assert_eq!(
            c.create_server(&creator, "X", "", "neon", 1)
                .unwrap_err()
                .code(),
            "invalid_banner_preset"
        );
        let mut locked = Community::new(
            Settings {
                allow_server_creation: false,
                ..settings(HistoryVisibility::Joined)
            },
            Snapshot::default(),
            seeded(),
        );
        locked.bootstrap_default_server("Home", None, 1);
        let refused = locked.create_server(&creator, "X", "", "", 1).unwrap_err();
        assert_eq!(
            (refused.status(), refused.code()),
            (403, "server_creation_disabled")
        );
    }

    #[test]
    fn the_directory_lists_discoverable_servers_and_hides_left_ones() {
        let mut c = community(HistoryVisibility::Joined);
        let alice = actor("uid_alice");
        let listed = |c: &Community, a: Option<&Actor>| {
            c.directory(a)
                .into_iter()
                .map(|d| d.server_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(listed(&c, None), vec!["home"]);
        assert_eq!(listed(&c, Some(&alice)), vec!["home"]);
        let created = c
            .create_server(&alice, "Club", "", "", 5)
            .unwrap()
            .value
            .server
            .server_id;
        assert_eq!(
            listed(&c, Some(&alice)),
            vec!["home".to_string(), created.clone()]
        );
        c.admit(&alice, "home", Admission::Connect, 6).unwrap();
        c.leave(&alice, "home", 7).unwrap();
        assert_eq!(listed(&c, Some(&alice)), vec![created]);
        let item = &c.directory(None)[0];
        assert_eq!(
            (item.trust_state, item.user_identifier_policy),
            ("verified", "either")
        );
    }

    #[test]
    fn the_seed_given_at_construction_fixes_every_id() {
        let ids = |c: &Community| {
            let mut ids: Vec<String> = c
                .directory
                .channels
                .keys()
                .map(|id| id.to_string())
                .collect();
            ids.extend(c.directory.categories.keys().cloned());
            ids.sort();
            ids
        };
        let a = community(HistoryVisibility::Joined);
        assert_eq!(ids(&a), ids(&community(HistoryVisibility::Joined)));
        let mut other = Community::new(
            settings(HistoryVisibility::Joined),
            Snapshot::default(),
            Entropy::from_seed([8; 32]),
        );
        other.bootstrap_default_server("Home", Some("uid_owner"), 1_000);
        assert_ne!(ids(&a), ids(&other));
    }
}
