//! The community state machine: every server, category, channel, membership, profile, avatar
//! asset, claim token, device and session of the instance, held in memory by one owner (the
//! authority, `crate::authority`), plus the rules that decide every command.
//!
//! A command checks everything first and changes nothing when it refuses; when it succeeds it
//! changes the in-memory state and returns an [`Outcome`]: its answer, the [`Record`]s storage
//! must commit for it (atomically), and the realtime events to publish once they are committed.
//! Messages themselves are not kept here (only the message order counter): the caller loads
//! them from storage and hands them in where a rule needs one (reply targets, deletes, acks).

use std::collections::{HashMap, HashSet};

use super::error::{DomainError, Limit, Needs, Readable, What};
use super::limits;
use super::model::*;
use super::records::{Record, Snapshot, Visibility};
use super::text;
use super::views::{self, *};

mod access;
#[cfg(test)]
mod tests;
mod tickets;

pub use access::{ReplayRule, Subject, readable};
pub use tickets::{MAX_TRACKED_TICKETS, TicketBook};

/// How long a server's ownership claim token stays valid.
pub const CLAIM_TOKEN_TTL_MS: Millis = 24 * 3600 * 1000;
/// The default server's claim token (logged once at first start) lives longer: an operator may
/// not claim on the first day.
pub const DEFAULT_SERVER_CLAIM_TTL_MS: Millis = 30 * 24 * 3600 * 1000;
/// A challenge must be signed within this time (wire contract B.1).
pub const CHALLENGE_TTL_MS: Millis = 60 * 1000;
/// Lifetime of a bearer session.
pub const SESSION_TTL_MS: Millis = 30 * 24 * 3600 * 1000;
/// Attachments per message (wire contract A.9).
pub const MAX_ATTACHMENTS_PER_MESSAGE: usize = 4;
/// Upper bound of `profiles:batch` (wire contract A.9).
pub const MAX_PROFILES_PER_BATCH: usize = 100;
/// Categories per server (409 `category_limit_reached`, `details.limit` `categories_per_server`).
pub const MAX_CATEGORIES_PER_SERVER: usize = 100;
/// Channels per server (409 `channel_limit_reached`, `details.limit` `channels_per_server`).
pub const MAX_CHANNELS_PER_SERVER: usize = 500;
/// Servers one uid may create (403 `server_limit_reached`, `details.limit` `servers_per_user`).
pub const MAX_SERVERS_CREATED_PER_USER: usize = 10;
/// Largest `limit` for history pages and mention lookups.
pub const MAX_HISTORY_PAGE: usize = 200;
pub const MAX_MENTION_RESULTS: usize = 50;
/// Length bound of a free-form avatar preset id.
pub const MAX_PRESET_ID_CHARS: usize = 64;

/// Where an entry sits in the server directory's order (the default server first, then by
/// creation time and id): what a directory page cursor stands for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirectoryKey {
    pub after_default: bool,
    pub created_at: Millis,
    pub server_id: String,
}

/// What a [`Community`] holds only in memory, carried across a reload of the rest from
/// storage: the rate-limit windows (or a failed write would refill every bucket), the used
/// join-ticket ids (or a used ticket would work again), the answered sign-in challenges (or an
/// answered one would work again), the issued and voided join tickets (or a ticket voided by a
/// leave, kick or ban would work again), and the open realtime sockets behind member status
/// (the sockets stay open).
#[derive(Debug, Default)]
pub struct Volatile {
    limiter: super::rate::RateLimiter,
    used_challenges: crate::auth::challenge::UsedChallenges,
    used_tickets: HashMap<String, i64>,
    tickets: TicketBook,
    online: HashMap<(String, String), u32>,
}

/// Who is asking: a uid and the device it speaks from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor {
    pub user_uid: String,
    pub device_id: String,
}

/// Instance-wide choices the rules depend on (from configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    pub default_server_id: String,
    pub default_history_visibility: HistoryVisibility,
    pub allow_server_creation: bool,
    pub max_message_bytes: usize,
    /// Writes per user and minute (see `rate`).
    pub rate_limit_per_minute: u32,
    /// `challenge_signature` (session mode) or `token_proof` (headers mode).
    pub handshake_strategy: &'static str,
    /// `OPENCHAT_PUBLIC_BASE_URL` without a trailing slash: signatures are bound to it.
    pub origin: String,
    pub urls: Urls,
}

/// Who a realtime event goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every socket of the server.
    Server,
    /// Only this user's sockets of the server.
    User(String),
}

/// A realtime event to publish after the command's records are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub server_id: String,
    /// Set for server-wide events (they are logged for resume); `None` for private ones.
    pub event_id: Option<i64>,
    pub audience: Audience,
    pub kind: &'static str,
    pub payload: String,
    pub created_at: Millis,
    /// What the event is about, for the read rule of a replay.
    pub subject: Subject,
}

/// Something shards must do besides writing frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The uid left the server (or was kicked or banned): its realtime sockets of that server
    /// close and its voice participation there ends. A kick's `VoiceKick` comes first, so the
    /// participant gets `rtc.kicked` before it is removed.
    MemberLeft { server_id: String, user_uid: String },
    /// Moderation removed the uid from voice in the server: `rtc.kicked`, then close.
    VoiceKick { server_id: String, user_uid: String },
    /// A session was revoked: the realtime sockets opened with its token close, and so does
    /// the voice participation of its device.
    SessionRevoked {
        token_hash: String,
        user_uid: String,
        device_id: String,
    },
}

/// What a successful command produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T> {
    pub value: T,
    pub records: Vec<Record>,
    pub events: Vec<Emitted>,
    pub notices: Vec<Notice>,
}

impl<T> Outcome<T> {
    /// A value with records to commit and nothing to publish.
    fn stored(value: T, records: Vec<Record>) -> Outcome<T> {
        Outcome {
            records,
            ..Outcome::pure(value)
        }
    }

    /// A value with records to commit and events to publish after the commit.
    fn published(value: T, records: Vec<Record>, events: Vec<Emitted>) -> Outcome<T> {
        Outcome {
            value,
            records,
            events,
            notices: Vec::new(),
        }
    }

    fn pure(value: T) -> Outcome<T> {
        Outcome {
            value,
            records: Vec::new(),
            events: Vec::new(),
            notices: Vec::new(),
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        Outcome {
            value: f(self.value),
            records: self.records,
            events: self.events,
            notices: self.notices,
        }
    }
}

/// Which path is asking to treat a uid as a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Any identified request: joins a uid that was never a member of an open server, but
    /// does not bring back one that left.
    FirstContact,
    /// Opening the server (realtime connect, a voice join ticket): joins, and re-admits a uid
    /// that left (a new membership span).
    Connect,
}

/// What a reader may see of a channel, decided before storage is asked for the messages.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryAccess {
    pub channel: Channel,
    pub visibility: Visibility,
    pub viewer: Option<Viewer>,
}

/// The reader, for the per-message `action_permissions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub user_uid: String,
    pub role: Role,
}

/// A sign-in whose crypto the caller has checked (`crate::auth::challenge`): the challenge
/// was issued by this instance for this device, key and uid and has not expired, and the
/// signature over it was verified (or not).
#[derive(Debug, Clone)]
pub struct SignIn {
    pub device_id: String,
    /// The key, in its one spelling (`crate::auth::encode_public_key`).
    pub public_key: String,
    /// The uid derived from the key.
    pub derived_uid: String,
    pub requested_uid: Option<String>,
    pub challenge: crate::auth::challenge::Verified,
    pub signature_valid: bool,
}

/// A message to post, after the API layer parsed and size-checked it.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub content: Content,
    pub reply_to: Option<Message>,
    pub reply_to_id: Option<String>,
    pub attachments: Vec<Attachment>,
}

/// A new profile, as `PUT /v1/profile/me` sends it.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    pub display_name: Option<String>,
    pub avatar_mode: Option<AvatarMode>,
    pub avatar_preset_id: Option<String>,
    pub avatar_asset_id: Option<String>,
    /// `If-Match`: the version the client last saw.
    pub if_match: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Community {
    settings: Option<Settings>,
    servers: HashMap<String, Server>,
    categories: HashMap<String, Category>,
    channels: HashMap<String, Channel>,
    memberships: HashMap<(String, String), Membership>,
    /// uid → servers it has a membership row in (current or past).
    user_servers: HashMap<String, HashSet<String>>,
    profiles: HashMap<String, Profile>,
    avatar_assets: HashMap<String, AvatarAsset>,
    claim_tokens: HashMap<String, ClaimToken>,
    devices: HashMap<String, Device>,
    sessions: HashMap<String, Session>,
    /// Challenges already answered (challenges themselves are stateless: `crate::auth`).
    used_challenges: crate::auth::challenge::UsedChallenges,
    /// Approved bindings of uids to keys other than their own.
    bindings: super::identity::Bindings,
    read_acks: HashMap<(String, String), ReadAck>,
    last_seq: Seq,
    last_event_ids: HashMap<String, i64>,
    /// Open realtime sockets per (server, uid), for member status.
    online: HashMap<(String, String), u32>,
    limiter: super::rate::RateLimiter,
    /// Moderation measures by (server, kind, target).
    moderation: HashMap<(String, ModerationKind, String), Moderation>,
    /// Join tickets already used, with their expiry (Unix seconds), for single use.
    used_tickets: HashMap<String, i64>,
    /// Issued join tickets and what voided them (leave, kick, ban, revoke).
    tickets: TicketBook,
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

impl Community {
    /// Builds the state from what storage holds.
    pub fn new(settings: Settings, snapshot: Snapshot) -> Community {
        let mut c = Community {
            limiter: super::rate::RateLimiter::new(settings.rate_limit_per_minute),
            settings: Some(settings),
            last_seq: snapshot.last_seq,
            last_event_ids: snapshot.last_event_ids,
            ..Community::default()
        };
        for s in snapshot.servers {
            c.servers.insert(s.id.clone(), s);
        }
        for cat in snapshot.categories {
            c.categories.insert(cat.id.clone(), cat);
        }
        for ch in snapshot.channels {
            c.channels.insert(ch.id.clone(), ch);
        }
        for m in snapshot.memberships {
            c.index_membership(m);
        }
        for p in snapshot.profiles {
            c.profiles.insert(p.user_uid.clone(), p);
        }
        for a in snapshot.avatar_assets {
            c.avatar_assets.insert(a.id.clone(), a);
        }
        for t in snapshot.claim_tokens {
            c.claim_tokens.insert(t.token_hash.clone(), t);
        }
        for d in snapshot.devices {
            c.devices.insert(d.device_id.clone(), d);
        }
        for s in snapshot.sessions {
            c.sessions.insert(s.token_hash.clone(), s);
        }
        c.bindings = super::identity::Bindings::new(snapshot.identity_bindings);
        for m in snapshot.moderation {
            c.moderation
                .insert((m.server_id.clone(), m.kind, m.target.clone()), m);
        }
        for a in snapshot.read_acks {
            c.read_acks
                .insert((a.user_uid.clone(), a.channel_id.clone()), a);
        }
        c
    }

    fn settings(&self) -> &Settings {
        self.settings
            .as_ref()
            .expect("Community built without settings")
    }

    pub fn urls(&self) -> &Urls {
        &self.settings().urls
    }

    pub fn default_server_id(&self) -> &str {
        &self.settings().default_server_id
    }

    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Highest event id handed out for `server_id` (0 when none).
    pub fn last_event_id(&self, server_id: &str) -> i64 {
        self.last_event_ids.get(server_id).copied().unwrap_or(0)
    }

    fn index_membership(&mut self, m: Membership) {
        self.user_servers
            .entry(m.user_uid.clone())
            .or_default()
            .insert(m.server_id.clone());
        self.memberships
            .insert((m.server_id.clone(), m.user_uid.clone()), m);
    }

    // ----- lookups ------------------------------------------------------------------------

    fn server(&self, server_id: &str) -> Result<&Server, DomainError> {
        self.servers
            .get(server_id)
            .ok_or(DomainError::NotFound(What::Server))
    }

    fn channel(&self, channel_id: &str) -> Result<&Channel, DomainError> {
        self.channels
            .get(channel_id)
            .ok_or(DomainError::NotFound(What::Channel))
    }

    fn membership(&self, server_id: &str, uid: &str) -> Option<&Membership> {
        self.memberships
            .get(&(server_id.to_owned(), uid.to_owned()))
    }

    /// The uid's role when it is a current member.
    pub fn current_role(&self, server_id: &str, uid: &str) -> Option<Role> {
        self.membership(server_id, uid)
            .filter(|m| m.is_current())
            .map(|m| m.role)
    }

    pub fn channel_info(&self, channel_id: &str) -> Option<&Channel> {
        self.channels.get(channel_id)
    }

    pub fn server_exists(&self, server_id: &str) -> bool {
        self.servers.contains_key(server_id)
    }

    fn has_public_channel(&self, server_id: &str) -> bool {
        self.channels
            .values()
            .any(|c| c.server_id == server_id && c.history_visibility == HistoryVisibility::Public)
    }

    /// The uid's profile, or the default one for a uid that never saved one.
    pub fn profile_of(&self, uid: &str) -> Profile {
        self.profiles.get(uid).cloned().unwrap_or_else(|| Profile {
            user_uid: uid.to_owned(),
            display_name: uid.chars().take(text::DISPLAY_NAME_MAX_CHARS).collect(),
            avatar_mode: AvatarMode::Generated,
            avatar_preset_id: None,
            avatar_asset_id: None,
            version: 0,
            updated_at: 0,
        })
    }

    fn display_name(&self, uid: &str) -> String {
        self.profiles
            .get(uid)
            .map(|p| p.display_name.clone())
            .unwrap_or_else(|| uid.to_owned())
    }

    // ----- events -------------------------------------------------------------------------

    /// A server-wide event with the next event id; its log record is added to `records`.
    fn server_event<T: serde::Serialize>(
        &mut self,
        records: &mut Vec<Record>,
        server_id: &str,
        kind: &'static str,
        payload: &T,
        now: Millis,
    ) -> Emitted {
        let event = self.counted_event(records, server_id, kind, payload, now);
        records.push(Record::Event(StoredEvent {
            server_id: server_id.to_owned(),
            event_id: event.event_id.expect("server events are numbered"),
            kind: kind.to_owned(),
            payload: event.payload.clone(),
            created_at: now,
        }));
        event
    }

    /// A server-wide event with the next event id that is counted but not logged (new
    /// messages: the message row is the record).
    fn counted_event<T: serde::Serialize>(
        &mut self,
        records: &mut Vec<Record>,
        server_id: &str,
        kind: &'static str,
        payload: &T,
        now: Millis,
    ) -> Emitted {
        let payload = encode(payload);
        let next = self.last_event_id(server_id) + 1;
        self.last_event_ids.insert(server_id.to_owned(), next);
        records.push(Record::LastEventId {
            server_id: server_id.to_owned(),
            event_id: next,
        });
        Emitted {
            server_id: server_id.to_owned(),
            event_id: Some(next),
            audience: Audience::Server,
            kind,
            payload,
            created_at: now,
            subject: Subject::Server,
        }
    }

    // ----- membership ---------------------------------------------------------------------

    /// Makes sure `actor` is a current member of `server_id`, joining it when `how` allows.
    /// Returns the role and the records of a join, if one happened.
    fn admit_inner(
        &mut self,
        server_id: &str,
        uid: &str,
        how: Admission,
        now: Millis,
        records: &mut Vec<Record>,
    ) -> Result<Role, DomainError> {
        let server = self.server(server_id)?;
        let JoinPolicy::Open = server.join_policy;
        let key = (server_id.to_owned(), uid.to_owned());
        let span = Span {
            joined_seq: self.last_seq,
            joined_at: now,
            left_seq: None,
            left_at: None,
        };
        let membership = match self.memberships.get(&key) {
            Some(m) if m.is_current() => return Ok(m.role),
            Some(_) if how == Admission::FirstContact => return Err(DomainError::NotAMember),
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
                    server_id: server_id.to_owned(),
                    user_uid: uid.to_owned(),
                    role,
                    spans: vec![span],
                }
            }
        };
        let role = membership.role;
        records.push(Record::Membership(membership.clone()));
        self.index_membership(membership);
        Ok(role)
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
        self.server(server_id)?;
        let key = (server_id.to_owned(), actor.user_uid.clone());
        let mut out = Outcome::pure(Left {
            server_id: server_id.to_owned(),
            user_uid: actor.user_uid.clone(),
            left: true,
            left_at: views::rfc3339(now),
        });
        let Some(m) = self.memberships.get(&key) else {
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
            user_uid: actor.user_uid.clone(),
        });
        self.index_membership(m);
        Ok(out)
    }

    /// Realtime bookkeeping for member status.
    pub fn socket_opened(&mut self, server_id: &str, uid: &str) {
        *self
            .online
            .entry((server_id.to_owned(), uid.to_owned()))
            .or_default() += 1;
    }

    pub fn socket_closed(&mut self, server_id: &str, uid: &str) {
        let key = (server_id.to_owned(), uid.to_owned());
        if let Some(n) = self.online.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.online.remove(&key);
            }
        }
    }

    /// Whether the uid may read anonymously-visible parts of the server.
    fn require_readable_server(
        &mut self,
        server_id: &str,
        actor: Option<&Actor>,
        now: Millis,
        records: &mut Vec<Record>,
    ) -> Result<Option<Role>, DomainError> {
        self.server(server_id)?;
        match actor {
            None if self.has_public_channel(server_id) => Ok(None),
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
                    Err(DomainError::NotAMember) if self.has_public_channel(server_id) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn require_admin(
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
            // A first contact may have joined above; that join stands (it is harmless and the
            // uid would be joined by its next request anyway), but it is not persisted here.
            if !records.is_empty() {
                self.rollback_join(server_id, &actor.user_uid);
            }
            return Err(DomainError::Forbidden(Needs::Admin));
        }
        Ok(records)
    }

    fn rollback_join(&mut self, server_id: &str, uid: &str) {
        let key = (server_id.to_owned(), uid.to_owned());
        if let Some(m) = self.memberships.get_mut(&key) {
            m.spans.pop();
            if m.spans.is_empty() {
                self.memberships.remove(&key);
                if let Some(set) = self.user_servers.get_mut(uid) {
                    set.remove(server_id);
                }
            }
        }
    }

    // ----- servers ------------------------------------------------------------------------

    fn directory_item(&self, server: &Server) -> DirectoryItem {
        DirectoryItem {
            server_id: server.id.clone(),
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
            server_id: s.id.clone(),
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

    fn directory_servers(&self, actor: Option<&Actor>) -> Vec<&Server> {
        let default_id = &self.settings().default_server_id;
        let mut listed: Vec<&Server> = self
            .servers
            .values()
            .filter(|s| match actor {
                None => s.discoverable,
                Some(a) => match self.membership(&s.id, &a.user_uid) {
                    Some(m) => m.is_current(),
                    None => s.discoverable,
                },
            })
            .collect();
        if let (Some(a), Some(default)) = (actor, self.servers.get(default_id)) {
            // A uid that never joined anything always sees the default server.
            let joined_any = self
                .user_servers
                .get(&a.user_uid)
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
    fn seed_server(
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
            id: id.clone(),
            display_name,
            description,
            banner_preset,
            discoverable: true,
            join_policy: JoinPolicy::Open,
            owner_uid: None,
            created_by_uid: created_by.clone(),
            created_at: now,
            updated_by_uid: created_by.clone(),
            updated_at: now,
        };
        records.push(Record::Server(server.clone()));
        self.servers.insert(id.clone(), server.clone());
        let visibility = self.settings().default_history_visibility;
        for (position, (label, kind, channel)) in [
            ("Text Channels", ChannelKind::Text, "general"),
            ("Voice Channels", ChannelKind::Voice, "General"),
        ]
        .into_iter()
        .enumerate()
        {
            let category = Category {
                id: new_id("cat"),
                server_id: id.clone(),
                label: label.to_owned(),
                kind,
                position: position as i64,
                created_by_uid: created_by.clone(),
                created_at: now,
            };
            let channel = Channel {
                id: new_id("ch"),
                server_id: id.clone(),
                category_id: category.id.clone(),
                name: channel.to_owned(),
                kind,
                position: 0,
                history_visibility: visibility,
                encryption: Encryption::None,
                created_by_uid: created_by.clone(),
                created_at: now,
            };
            records.push(Record::Category(category.clone()));
            records.push(Record::Channel(channel.clone()));
            self.categories.insert(category.id.clone(), category);
            self.channels.insert(channel.id.clone(), channel);
        }
        server
    }

    fn new_claim_token(
        &mut self,
        server_id: &str,
        ttl: Millis,
        now: Millis,
        records: &mut Vec<Record>,
    ) -> (String, Millis) {
        let token = crate::auth::new_token("occ_");
        let claim = ClaimToken {
            token_hash: crate::auth::hash_token(&token),
            server_id: server_id.to_owned(),
            expires_at: now + ttl,
            used_at: None,
        };
        records.push(Record::ClaimToken(claim.clone()));
        self.claim_tokens.insert(claim.token_hash.clone(), claim);
        (token, now + ttl)
    }

    fn set_owner(&mut self, server_id: &str, uid: &str, now: Millis, records: &mut Vec<Record>) {
        let mut server = self.servers[server_id].clone();
        let previous = server.owner_uid.replace(uid.to_owned());
        server.updated_at = now;
        records.push(Record::Server(server.clone()));
        self.servers.insert(server_id.to_owned(), server);
        if let Some(prev) = previous.filter(|p| p != uid)
            && let Some(m) = self.membership(server_id, &prev).cloned()
        {
            let m = Membership {
                role: Role::Admin,
                ..m
            };
            records.push(Record::Membership(m.clone()));
            self.index_membership(m);
        }
        let _ = self.admit_inner(server_id, uid, Admission::Connect, now, records);
        let m = self
            .membership(server_id, uid)
            .cloned()
            .expect("admitted above");
        if m.role != Role::Owner {
            let m = Membership {
                role: Role::Owner,
                ..m
            };
            records.push(Record::Membership(m.clone()));
            self.index_membership(m);
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
        if !self.servers.contains_key(&id) {
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
            && self.servers[&id].owner_uid.as_deref() != Some(owner)
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
            .servers
            .values()
            .filter(|s| s.created_by_uid.as_deref() == Some(&actor.user_uid))
            .count();
        if created >= MAX_SERVERS_CREATED_PER_USER {
            return Err(DomainError::LimitReached(Limit::ServersPerUser));
        }
        let mut records = Vec::new();
        let server = self.seed_server(
            new_id("srv"),
            display_name,
            description,
            banner,
            Some(actor.user_uid.clone()),
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
                created_by_uid: actor.user_uid.clone(),
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
        self.server(server_id)?;
        let hash = crate::auth::hash_token(token);
        let claim = self
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
        self.claim_tokens.remove(&hash);
        self.set_owner(server_id, &actor.user_uid, now, &mut records);
        Ok(Outcome::stored(
            Claimed {
                server_id: server_id.to_owned(),
                owner_user_uid: actor.user_uid.clone(),
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
        let s = &self.servers[server_id];
        Ok(Outcome::stored(
            views::Settings {
                server_id: s.id.clone(),
                display_name: s.display_name.clone(),
                description: s.description.clone(),
                banner_preset: s.banner_preset.clone(),
            },
            records,
        ))
    }

    /// `PUT /v1/servers/{id}/settings` (owner or admin); emits `chat.server.updated`.
    pub fn update_settings(
        &mut self,
        actor: &Actor,
        server_id: &str,
        display_name: Option<&str>,
        description: Option<&str>,
        banner_preset: Option<&str>,
        now: Millis,
    ) -> Result<Outcome<SettingsUpdated>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        self.server(server_id)?;
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
        let mut server = self.servers[server_id].clone();
        if let Some(n) = display_name {
            server.display_name = n;
        }
        if let Some(d) = description {
            server.description = d;
        }
        if let Some(b) = banner {
            server.banner_preset = b;
        }
        server.updated_at = now;
        server.updated_by_uid = Some(actor.user_uid.clone());
        records.push(Record::Server(server.clone()));
        let value = SettingsUpdated {
            server_id: server.id.clone(),
            display_name: server.display_name.clone(),
            description: server.description.clone(),
            banner_preset: server.banner_preset.clone(),
            updated_by_uid: actor.user_uid.clone(),
            updated_at: views::rfc3339(now),
        };
        self.servers.insert(server.id.clone(), server);
        let event = self.server_event(&mut records, server_id, "chat.server.updated", &value, now);
        Ok(Outcome::published(value, records, vec![event]))
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
            .memberships
            .values()
            .filter(|m| m.server_id == server_id && m.is_current())
            .map(|m| MemberItem {
                id: m.user_uid.clone(),
                name: self.display_name(&m.user_uid),
                status: if self
                    .online
                    .contains_key(&(server_id.to_owned(), m.user_uid.clone()))
                {
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

    // ----- layout -------------------------------------------------------------------------

    /// The server's groups in display order, each with its channels in order. `only_public`
    /// leaves out channels an anonymous reader may not see (and groups left empty by that).
    fn layout(&self, server_id: &str, only_public: bool) -> Vec<Group> {
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
            .filter(|c| !only_public || c.history_visibility == HistoryVisibility::Public)
            .collect();
        channels.sort_by(|a, b| (a.position, &a.id).cmp(&(b.position, &b.id)));
        cats.into_iter()
            .map(|cat| Group {
                id: cat.id.clone(),
                label: cat.label.clone(),
                kind: cat.kind.as_str(),
                channels: channels
                    .iter()
                    .filter(|c| c.category_id == cat.id)
                    .map(|c| ChannelItem::of(c))
                    .collect(),
            })
            .filter(|g| !only_public || !g.channels.is_empty())
            .collect()
    }

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
                groups: self.layout(server_id, role.is_none()),
            },
            records,
        ))
    }

    fn group_of(&self, category_id: &str) -> Group {
        let cat = &self.categories[category_id];
        self.layout(&cat.server_id, false)
            .into_iter()
            .find(|g| g.id == category_id)
            .expect("category is in its server's layout")
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
        self.server(server_id)?;
        limits::text_field("name", name)?;
        let name = text::normalize_label(name, text::CHANNEL_NAME_MAX_CHARS)
            .map_err(DomainError::InvalidName)?;
        let category = match group_id {
            Some(g) => self
                .categories
                .get(g)
                .filter(|c| c.server_id == server_id)
                .ok_or(DomainError::NotFound(What::Group))?,
            None => {
                let mut same_kind: Vec<&Category> = self
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
            .channels
            .values()
            .filter(|c| c.category_id == category_id)
            .map(|c| c.position + 1)
            .max()
            .unwrap_or(0);
        let channel = Channel {
            id: new_id("ch"),
            server_id: server_id.to_owned(),
            category_id: category_id.clone(),
            name,
            kind,
            position,
            history_visibility: visibility.unwrap_or(self.settings().default_history_visibility),
            encryption: encryption.unwrap_or(Encryption::None),
            created_by_uid: Some(actor.user_uid.clone()),
            created_at: now,
        };
        records.push(Record::Channel(channel.clone()));
        self.channels.insert(channel.id.clone(), channel.clone());
        let value = ChannelCreated {
            server_id: server_id.to_owned(),
            group_id: category_id,
            channel: ChannelItem::of(&channel),
            created_by_uid: actor.user_uid.clone(),
            created_at: views::rfc3339(now),
        };
        let event = self.server_event(&mut records, server_id, "chat.channel.created", &value, now);
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
        self.server(server_id)?;
        limits::text_field("name", name)?;
        let label = text::normalize_label(name, text::CATEGORY_NAME_MAX_CHARS)
            .map_err(DomainError::InvalidName)?;
        let existing: Vec<&Category> = self
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
            id: new_id("cat"),
            server_id: server_id.to_owned(),
            label,
            kind,
            position,
            created_by_uid: Some(actor.user_uid.clone()),
            created_at: now,
        };
        records.push(Record::Category(category.clone()));
        self.categories
            .insert(category.id.clone(), category.clone());
        let value = CategoryCreated {
            server_id: server_id.to_owned(),
            group: self.group_of(&category.id),
            created_by_uid: actor.user_uid.clone(),
            created_at: views::rfc3339(now),
        };
        let event = self.server_event(
            &mut records,
            server_id,
            "chat.category.created",
            &value,
            now,
        );
        Ok(Outcome::published(value, records, vec![event]))
    }

    fn category_in(&self, server_id: &str, group_id: &str) -> Result<&Category, DomainError> {
        self.server(server_id)?;
        self.categories
            .get(group_id)
            .filter(|c| c.server_id == server_id)
            .ok_or(DomainError::NotFound(What::Group))
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
        self.category_in(server_id, group_id)?;
        limits::text_field("name", name)?;
        let label = text::normalize_label(name, text::CATEGORY_NAME_MAX_CHARS)
            .map_err(DomainError::InvalidName)?;
        let mut records = self.require_admin(server_id, actor, now)?;
        let mut category = self.categories[group_id].clone();
        category.label = label;
        records.push(Record::Category(category.clone()));
        self.categories.insert(category.id.clone(), category);
        let value = CategoryUpdated {
            server_id: server_id.to_owned(),
            group: self.group_of(group_id),
            updated_by_uid: actor.user_uid.clone(),
            updated_at: views::rfc3339(now),
        };
        let event = self.server_event(
            &mut records,
            server_id,
            "chat.category.updated",
            &value,
            now,
        );
        Ok(Outcome::published(value, records, vec![event]))
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
        let kind = self.category_in(server_id, group_id)?.kind;
        let mut others: Vec<&Category> = self
            .categories
            .values()
            .filter(|c| c.server_id == server_id && c.id != group_id && c.kind == kind)
            .collect();
        others.sort_by_key(|c| (c.position, c.id.clone()));
        let heir = others.first().map(|c| c.id.clone());
        let orphans: Vec<Channel> = {
            let mut v: Vec<Channel> = self
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
                self.channels.insert(ch.id.clone(), ch);
            }
        }
        records.push(Record::DeleteCategory {
            id: group_id.to_owned(),
        });
        self.categories.remove(group_id);
        self.layout_event(actor, server_id, now, records)
    }

    fn layout_event(
        &mut self,
        actor: &Actor,
        server_id: &str,
        now: Millis,
        mut records: Vec<Record>,
    ) -> Result<Outcome<LayoutUpdated>, DomainError> {
        let value = LayoutUpdated {
            server_id: server_id.to_owned(),
            groups: self.layout(server_id, false),
            updated_by_uid: actor.user_uid.clone(),
            updated_at: views::rfc3339(now),
        };
        let event = self.server_event(
            &mut records,
            server_id,
            "chat.channel.layout.updated",
            &value,
            now,
        );
        Ok(Outcome::published(value, records, vec![event]))
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
        self.server(server_id)?;
        let bad = DomainError::InvalidLayout;
        let mut seen_groups = HashSet::new();
        let mut seen_channels = HashSet::new();
        for (group_id, channel_ids) in groups {
            let cat = self
                .categories
                .get(group_id)
                .filter(|c| c.server_id == server_id)
                .ok_or_else(|| bad(format!("unknown group {group_id}")))?;
            if !seen_groups.insert(group_id.as_str()) {
                return Err(bad(format!("group {group_id} listed twice")));
            }
            for id in channel_ids {
                let ch = self
                    .channels
                    .get(id)
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
            let mut cat = self.categories[&group_id].clone();
            if cat.position != position as i64 {
                cat.position = position as i64;
                records.push(Record::Category(cat.clone()));
                self.categories.insert(group_id, cat);
            }
        }
        for (group_id, channel_ids) in groups {
            for (position, id) in channel_ids.iter().enumerate() {
                let mut ch = self.channels[id].clone();
                if ch.category_id != *group_id || ch.position != position as i64 {
                    ch.category_id = group_id.clone();
                    ch.position = position as i64;
                    records.push(Record::Channel(ch.clone()));
                    self.channels.insert(id.clone(), ch);
                }
            }
        }
        self.layout_event(actor, server_id, now, records)
    }

    // ----- messages -----------------------------------------------------------------------

    /// Decides what `actor` may read of a channel (wire contract B.2). Anonymous readers see
    /// `public` channels only; members see `members` channels whole and `joined` channels for
    /// their membership spans; a uid that left sees nothing but `public` channels.
    pub fn history_access(
        &mut self,
        actor: Option<&Actor>,
        channel_id: &str,
        now: Millis,
    ) -> Result<Outcome<HistoryAccess>, DomainError> {
        let channel = self.channel(channel_id)?.clone();
        let public = channel.history_visibility == HistoryVisibility::Public;
        let Some(actor) = actor else {
            if public {
                return Ok(Outcome::pure(HistoryAccess {
                    channel,
                    visibility: Visibility::All,
                    viewer: None,
                }));
            }
            return Err(DomainError::IdentityRequired(Readable::Channel));
        };
        let mut records = Vec::new();
        let role = match self.admit_inner(
            &channel.server_id,
            &actor.user_uid,
            Admission::FirstContact,
            now,
            &mut records,
        ) {
            Ok(role) => Some(role),
            Err(DomainError::NotAMember) if public => None,
            Err(e) => return Err(e),
        };
        let visibility = self
            .read_visibility(&channel, Some(&actor.user_uid))
            .ok_or(DomainError::NotAMember)?;
        Ok(Outcome::stored(
            HistoryAccess {
                channel,
                visibility,
                viewer: role.map(|role| Viewer {
                    user_uid: actor.user_uid.clone(),
                    role,
                }),
            },
            records,
        ))
    }

    /// Renders a stored message for a reader (see [`render`]).
    pub fn render(
        &self,
        message: &Message,
        reply_target: Option<&Message>,
        visibility: &Visibility,
        viewer: Option<&Viewer>,
    ) -> MessageItem {
        render(self.urls(), message, reply_target, visibility, viewer)
    }

    /// `POST /v1/channels/{id}/messages`; emits `chat.message.created` to the whole server.
    pub fn post_message(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        new: NewMessage,
        now: Millis,
    ) -> Result<Outcome<MessageItem>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        check_message_text(&new)?;
        let channel = self.channel(channel_id)?.clone();
        if channel.kind != ChannelKind::Text {
            return Err(DomainError::NotATextChannel);
        }
        match (&new.content, channel.encryption) {
            (Content::Plain { .. }, Encryption::E2ee) => {
                return Err(DomainError::PlaintextNotAllowed);
            }
            (Content::Envelope { .. }, Encryption::None) => {
                return Err(DomainError::EnvelopeNotAllowed);
            }
            (Content::Envelope { .. }, Encryption::E2ee) => {
                return Err(DomainError::EpochRotationRequired);
            }
            (Content::Plain { body }, Encryption::None) => {
                if body.len() > self.settings().max_message_bytes {
                    return Err(DomainError::MessageTooLarge {
                        max_bytes: self.settings().max_message_bytes,
                    });
                }
                if body.trim().is_empty() && new.attachments.is_empty() {
                    return Err(DomainError::EmptyMessage);
                }
            }
        }
        if new.attachments.len() > MAX_ATTACHMENTS_PER_MESSAGE {
            return Err(DomainError::TooManyAttachments);
        }
        let mut records = Vec::new();
        let role = self.admit_inner(
            &channel.server_id,
            &actor.user_uid,
            Admission::FirstContact,
            now,
            &mut records,
        )?;
        // After the admission: a first contact reads from its join on.
        if let Err(e) = self.check_reply_target(
            &actor.user_uid,
            &channel,
            new.reply_to_id.as_deref(),
            new.reply_to.as_ref(),
        ) {
            if !records.is_empty() {
                self.rollback_join(&channel.server_id, &actor.user_uid);
            }
            return Err(e);
        }
        let mentions = match &new.content {
            Content::Plain { body } => self.mentions_in(body, channel_id),
            Content::Envelope { .. } => Vec::new(),
        };
        self.last_seq += 1;
        let message = Message {
            seq: self.last_seq,
            id: message_id(self.last_seq),
            server_id: channel.server_id.clone(),
            channel_id: channel_id.to_owned(),
            author_uid: actor.user_uid.clone(),
            author_device_id: actor.device_id.clone(),
            content: new.content,
            reply_to_id: new.reply_to_id.clone(),
            mentions,
            attachments: new.attachments,
            created_at: now,
            deleted_at: None,
        };
        // The event is what every member sees, so it carries a plain member's permissions;
        // the author's own answer carries the author's.
        let plain_member = Viewer {
            user_uid: String::new(),
            role: Role::Member,
        };
        let shared = self.render(
            &message,
            new.reply_to.as_ref(),
            &Visibility::All,
            Some(&plain_member),
        );
        let value = MessageItem {
            action_permissions: permissions(
                &message,
                Some(&Viewer {
                    user_uid: actor.user_uid.clone(),
                    role,
                }),
            ),
            ..shared.clone()
        };
        let subject = Subject::Message {
            channel_id: channel_id.to_owned(),
            seq: message.seq,
        };
        records.push(Record::Message(message));
        let mut event = self.counted_event(
            &mut records,
            &channel.server_id,
            "chat.message.created",
            &MessageOut { message: shared },
            now,
        );
        event.subject = subject;
        Ok(Outcome::published(value, records, vec![event]))
    }

    fn mentions_in(&self, body: &str, channel_id: &str) -> Vec<Mention> {
        text::parse_mentions(body)
            .into_iter()
            .map(|span| {
                let (kind, target_id, display_text) = match span.kind {
                    text::MentionKind::User => (
                        "user",
                        span.target.clone(),
                        format!("@{}", self.display_name(&span.target)),
                    ),
                    text::MentionKind::Here | text::MentionKind::Channel => {
                        ("channel", channel_id.to_owned(), span.token.clone())
                    }
                };
                Mention {
                    kind: kind.to_owned(),
                    token: span.token,
                    target_id,
                    display_text,
                    range: Utf16Range {
                        start: span.start,
                        end: span.end,
                    },
                }
            })
            .collect()
    }

    /// `DELETE /v1/channels/{id}/messages/{message_id}` (the author, or a moderator or above);
    /// emits `chat.message.deleted`.
    pub fn delete_message(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        message: &Message,
        now: Millis,
    ) -> Result<Outcome<views::MessageDeleted>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        let channel = self.channel(channel_id)?.clone();
        if message.channel_id != channel_id {
            return Err(DomainError::NotFound(What::Message));
        }
        let role = self
            .current_role(&channel.server_id, &actor.user_uid)
            .ok_or(DomainError::NotAMember)?;
        if message.author_uid != actor.user_uid && !role.at_least(Role::Moderator) {
            return Err(DomainError::Forbidden(Needs::AuthorOrModerator));
        }
        let deleted_at = message.deleted_at.unwrap_or(now);
        let value = views::MessageDeleted {
            deleted: true,
            server_id: channel.server_id.clone(),
            channel_id: channel_id.to_owned(),
            message_id: message.id.clone(),
            deleted_by_uid: actor.user_uid.clone(),
            deleted_at: views::rfc3339(deleted_at),
        };
        if message.deleted_at.is_some() {
            return Ok(Outcome::pure(value));
        }
        let mut records = vec![Record::MessageDeleted {
            id: message.id.clone(),
            deleted_at: now,
        }];
        let mut event = self.server_event(
            &mut records,
            &channel.server_id,
            "chat.message.deleted",
            &value,
            now,
        );
        event.subject = Subject::Message {
            channel_id: channel_id.to_owned(),
            seq: message.seq,
        };
        Ok(Outcome::published(value, records, vec![event]))
    }

    // ----- read acks and mentions ---------------------------------------------------------

    fn member_of_channel(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        now: Millis,
        records: &mut Vec<Record>,
    ) -> Result<(Channel, Role), DomainError> {
        let channel = self.channel(channel_id)?.clone();
        let role = self.admit_inner(
            &channel.server_id,
            &actor.user_uid,
            Admission::FirstContact,
            now,
            records,
        )?;
        Ok((channel, role))
    }

    fn read_ack_item(&self, uid: &str, channel_id: &str) -> ReadAckItem {
        match self.read_acks.get(&(uid.to_owned(), channel_id.to_owned())) {
            Some(a) => ReadAckItem {
                channel_id: channel_id.to_owned(),
                user_uid: uid.to_owned(),
                last_read_message_id: Some(a.message_id.clone()),
                acked_at: Some(views::rfc3339(a.acked_at)),
                cursor_index: a.seq,
            },
            None => ReadAckItem {
                channel_id: channel_id.to_owned(),
                user_uid: uid.to_owned(),
                last_read_message_id: None,
                acked_at: None,
                cursor_index: 0,
            },
        }
    }

    /// `GET /v1/channels/{id}/read-ack`.
    pub fn read_ack(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        now: Millis,
    ) -> Result<Outcome<ReadAckOut>, DomainError> {
        let mut records = Vec::new();
        self.member_of_channel(actor, channel_id, now, &mut records)?;
        Ok(Outcome::stored(
            ReadAckOut {
                channel_id: channel_id.to_owned(),
                read_ack: self.read_ack_item(&actor.user_uid, channel_id),
                applied: None,
            },
            records,
        ))
    }

    /// `PUT /v1/channels/{id}/read-ack`: moves forward only; emits `chat.read_ack.updated` to
    /// the same user's sockets.
    pub fn put_read_ack(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        message: &Message,
        now: Millis,
    ) -> Result<Outcome<ReadAckOut>, DomainError> {
        if message.channel_id != channel_id {
            return Err(DomainError::NotFound(What::Message));
        }
        let mut records = Vec::new();
        let (channel, _) = self.member_of_channel(actor, channel_id, now, &mut records)?;
        let key = (actor.user_uid.clone(), channel_id.to_owned());
        let applied = self.read_acks.get(&key).is_none_or(|a| a.seq < message.seq);
        let mut events = Vec::new();
        if applied {
            let ack = ReadAck {
                user_uid: actor.user_uid.clone(),
                channel_id: channel_id.to_owned(),
                message_id: message.id.clone(),
                seq: message.seq,
                acked_at: now,
            };
            records.push(Record::ReadAck(ack.clone()));
            self.read_acks.insert(key, ack);
        }
        let value = ReadAckOut {
            channel_id: channel_id.to_owned(),
            read_ack: self.read_ack_item(&actor.user_uid, channel_id),
            applied: Some(applied),
        };
        if applied {
            events.push(Emitted {
                server_id: channel.server_id.clone(),
                event_id: None,
                audience: Audience::User(actor.user_uid.clone()),
                kind: "chat.read_ack.updated",
                payload: encode(&value),
                created_at: now,
                subject: Subject::Server,
            });
        }
        Ok(Outcome::published(value, records, events))
    }

    /// `GET /v1/channels/{id}/mentions:resolve`: members whose name or uid matches `query`
    /// (case-insensitive prefix of a word, or substring of the uid), then `@here`/`@channel`.
    pub fn resolve_mentions(
        &mut self,
        actor: &Actor,
        channel_id: &str,
        query: &str,
        limit: usize,
        now: Millis,
    ) -> Result<Outcome<MentionResults>, DomainError> {
        limits::text_field("query", query)?;
        let mut records = Vec::new();
        let (channel, _) = self.member_of_channel(actor, channel_id, now, &mut records)?;
        let q = query.trim().trim_start_matches('@').to_lowercase();
        let limit = limit.clamp(1, MAX_MENTION_RESULTS);
        let mut users: Vec<MentionCandidate> = self
            .memberships
            .values()
            .filter(|m| m.server_id == channel.server_id && m.is_current())
            .filter_map(|m| {
                let name = self.display_name(&m.user_uid);
                let lname = name.to_lowercase();
                let hit = q.is_empty()
                    || lname.split_whitespace().any(|w| w.starts_with(&q))
                    || lname.starts_with(&q)
                    || m.user_uid.to_lowercase().contains(&q);
                hit.then(|| MentionCandidate {
                    kind: "user",
                    token: format!("@{}", m.user_uid),
                    target_id: m.user_uid.clone(),
                    display_text: name,
                })
            })
            .collect();
        users.sort_by(|a, b| (&a.display_text, &a.target_id).cmp(&(&b.display_text, &b.target_id)));
        let mut results: Vec<MentionCandidate> = users;
        for token in ["@here", "@channel"] {
            if q.is_empty() || token[1..].starts_with(&q) {
                results.push(MentionCandidate {
                    kind: "channel",
                    token: token.to_owned(),
                    target_id: channel.id.clone(),
                    display_text: token.to_owned(),
                });
            }
        }
        results.truncate(limit);
        Ok(Outcome::stored(MentionResults { results }, records))
    }

    // ----- profiles -----------------------------------------------------------------------

    pub fn profile_item(&self, uid: &str) -> ProfileItem {
        ProfileItem::of(&self.profile_of(uid), self.urls())
    }

    /// `PUT /v1/profile/me`; emits `profile_updated` to every server the user belongs to.
    pub fn put_profile(
        &mut self,
        actor: &Actor,
        change: ProfileChange,
        now: Millis,
    ) -> Result<Outcome<ProfileItem>, DomainError> {
        self.limiter.check(&actor.user_uid, now)?;
        limits::optional_text_field("display_name", change.display_name.as_deref())?;
        limits::optional_text_field("avatar_preset_id", change.avatar_preset_id.as_deref())?;
        limits::optional_text_field("avatar_asset_id", change.avatar_asset_id.as_deref())?;
        let current = self.profile_of(&actor.user_uid);
        if let Some(expected) = change.if_match
            && expected != current.version
        {
            return Err(DomainError::ProfileConflict {
                current: Box::new(ProfileItem::of(&current, self.urls())),
            });
        }
        let mut next = current.clone();
        if let Some(name) = change.display_name {
            next.display_name =
                text::normalize_display_name(&name).map_err(DomainError::InvalidDisplayName)?;
        }
        if let Some(preset) = change.avatar_preset_id {
            if preset.chars().count() > MAX_PRESET_ID_CHARS {
                return Err(DomainError::InvalidAvatarPresetId);
            }
            next.avatar_preset_id = Some(preset).filter(|p| !p.is_empty());
        }
        if let Some(asset) = change.avatar_asset_id {
            if asset.is_empty() {
                next.avatar_asset_id = None;
            } else {
                match self.avatar_assets.get(&asset) {
                    Some(a) if a.owner_uid == actor.user_uid => next.avatar_asset_id = Some(asset),
                    _ => {
                        return Err(DomainError::AvatarAssetForbidden);
                    }
                }
            }
        }
        if let Some(mode) = change.avatar_mode {
            next.avatar_mode = mode;
        }
        if next.avatar_mode == AvatarMode::Uploaded && next.avatar_asset_id.is_none() {
            return Err(DomainError::AvatarAssetRequired);
        }
        next.version = current.version + 1;
        next.updated_at = now;
        let mut records = vec![Record::Profile(next.clone())];
        self.profiles.insert(actor.user_uid.clone(), next.clone());
        let item = ProfileItem::of(&next, self.urls());
        let payload = ProfileOut {
            profile: item.clone(),
        };
        let mut servers: Vec<String> = self
            .user_servers
            .get(&actor.user_uid)
            .map(|s| {
                s.iter()
                    .filter(|id| self.current_role(id, &actor.user_uid).is_some())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        servers.sort();
        let events = servers
            .iter()
            .map(|id| self.server_event(&mut records, id, "profile_updated", &payload, now))
            .collect();
        Ok(Outcome {
            value: item,
            records,
            events,
            notices: Vec::new(),
        })
    }

    /// Takes a write token for work done before the authority sees the command (uploads are
    /// checked and stored first): a user over the limit is refused before that work.
    pub fn take_write_token(&mut self, uid: &str, now: Millis) -> Result<(), DomainError> {
        self.limiter.check(uid, now)
    }

    /// Registers an avatar the API layer has checked and stored.
    pub fn add_avatar_asset(&mut self, asset: AvatarAsset) -> Outcome<AvatarUploaded> {
        let value = AvatarUploaded {
            avatar_asset_id: asset.id.clone(),
            avatar_url: self.urls().avatar(&asset.id),
            width: asset.width,
            height: asset.height,
            content_type: asset.content_type.clone(),
            bytes: asset.bytes,
        };
        let records = vec![Record::AvatarAsset(asset.clone())];
        self.avatar_assets.insert(asset.id.clone(), asset);
        Outcome::stored(value, records)
    }

    /// The stored blob behind an avatar asset id.
    pub fn avatar_asset(&self, asset_id: &str) -> Option<&AvatarAsset> {
        self.avatar_assets.get(asset_id)
    }

    /// `GET /v1/profiles:batch`.
    pub fn profiles(&self, uids: &[String]) -> Result<Profiles, DomainError> {
        if uids.len() > MAX_PROFILES_PER_BATCH {
            return Err(DomainError::TooManyProfiles);
        }
        let mut seen = HashSet::new();
        Ok(Profiles {
            profiles: uids
                .iter()
                .filter(|u| seen.insert(u.as_str()))
                .map(|u| self.profile_item(u))
                .collect(),
        })
    }

    // ----- sessions -----------------------------------------------------------------------

    /// `POST /v1/auth/session`: spends the challenge (single use, whether or not the signature
    /// checked out), decides the uid (`super::identity`), binds the device to the key on first
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
        match self.used_challenges.consume(&sign_in.challenge, now) {
            Ok(()) => {}
            Err(Consumed::Replayed) => return Err(DomainError::ChallengeInvalid),
            Err(Consumed::Full) => return Err(DomainError::SignInsThrottled),
        }
        if !sign_in.signature_valid {
            return Err(DomainError::SignatureMismatch);
        }
        let device_id = sign_in.device_id.as_str();
        let public_key = sign_in.public_key.as_str();
        let uid = super::identity::sign_in_uid(
            &sign_in.derived_uid,
            sign_in.requested_uid.as_deref(),
            public_key,
            sign_in
                .requested_uid
                .as_deref()
                .and_then(|u| self.bindings.get(u)),
            self.devices.values(),
        )?;
        let mut records = Vec::new();
        match self.devices.get(device_id) {
            Some(d) if d.user_uid != uid || d.public_key != public_key => {
                return Err(DomainError::KeyMismatch);
            }
            Some(d) if d.revoked_at.is_some() => return Err(DomainError::DeviceRevoked),
            Some(_) => {}
            None => {
                // Another key of the uid was refused above (`sign_in_uid`); a new device of
                // the same key is the same identity.
                let device = Device {
                    device_id: device_id.to_owned(),
                    user_uid: uid.clone(),
                    public_key: public_key.to_owned(),
                    created_at: now,
                    revoked_at: None,
                };
                records.push(Record::Device(device.clone()));
                self.devices.insert(device_id.to_owned(), device);
            }
        }
        let token = crate::auth::new_token("ocs_");
        let session = Session {
            token_hash: crate::auth::hash_token(&token),
            user_uid: uid.clone(),
            device_id: device_id.to_owned(),
            created_at: now,
            expires_at: now + SESSION_TTL_MS,
            revoked_at: None,
        };
        records.push(Record::Session(session.clone()));
        self.sessions.insert(session.token_hash.clone(), session);
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

    /// The actor behind a bearer token, if the session is live.
    pub fn authenticate(&self, token: &str, now: Millis) -> Option<(Actor, Millis)> {
        let s = self.sessions.get(&crate::auth::hash_token(token))?;
        if s.revoked_at.is_some() || s.expires_at <= now {
            return None;
        }
        let device = self.devices.get(&s.device_id)?;
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
        let Some(mut s) = self.sessions.remove(&hash) else {
            return Err(DomainError::NoSuchSession);
        };
        s.revoked_at = Some(now);
        // Its sockets close, its device's voice ends and its unused tickets stop working.
        self.tickets.void_device(&s.user_uid, &s.device_id, now);
        let notice = Notice::SessionRevoked {
            token_hash: hash,
            user_uid: s.user_uid.clone(),
            device_id: s.device_id.clone(),
        };
        Ok(Outcome {
            notices: vec![notice],
            ..Outcome::stored((), vec![Record::Session(s)])
        })
    }

    /// Takes out the state that lives only in memory and that a reload from storage must not
    /// lose (see [`Volatile`]); this state is left with none of it.
    pub fn take_volatile(&mut self) -> Volatile {
        Volatile {
            limiter: std::mem::take(&mut self.limiter),
            used_challenges: std::mem::take(&mut self.used_challenges),
            used_tickets: std::mem::take(&mut self.used_tickets),
            tickets: std::mem::take(&mut self.tickets),
            online: std::mem::take(&mut self.online),
        }
    }

    /// Puts back what [`Community::take_volatile`] took from the state this one replaces.
    pub fn restore_volatile(&mut self, volatile: Volatile) {
        self.limiter = volatile.limiter;
        self.used_challenges = volatile.used_challenges;
        self.used_tickets = volatile.used_tickets;
        self.tickets = volatile.tickets;
        self.online = volatile.online;
    }

    /// Removes expired challenges (called now and then by the authority).
    pub fn sweep(&mut self, now: Millis) {
        self.used_challenges.sweep(now);
        self.sessions.retain(|_, s| s.expires_at > now);
        self.limiter.sweep(now);
        let now_secs = now / 1000;
        self.used_tickets.retain(|_, exp| *exp > now_secs);
        self.tickets.sweep(now);
        self.moderation.retain(|_, m| m.in_force(now));
    }

    /// `POST /v1/servers/{id}/identity-bindings`: an owner or admin of the server approves
    /// that `public_key` may sign in as `user_uid`, a uid that was a member of the server (a
    /// headers-mode uid moving to sessions). See `super::identity` for who may approve what.
    pub fn approve_binding(
        &mut self,
        actor: &Actor,
        server_id: &str,
        user_uid: &str,
        public_key: &str,
        now: Millis,
    ) -> Result<Outcome<super::identity::BindingView>, DomainError> {
        use super::identity::{IdentityBinding, bound_elsewhere, may_approve};
        self.limiter.check(&actor.user_uid, now)?;
        self.server(server_id)?;
        let Some(target) = self.membership(server_id, user_uid) else {
            return Err(DomainError::NotFound(What::PastMember));
        };
        let target_role = target.is_current().then_some(target.role);
        let elsewhere: Vec<(Option<Role>, Role)> = self
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
            self.bindings.get(user_uid),
            self.devices.values(),
        ) {
            return Err(DomainError::KeyMismatch);
        }
        let binding = match self.bindings.get(user_uid) {
            // Approved before for the same key: nothing new to record.
            Some(existing) => existing.clone(),
            None => IdentityBinding {
                user_uid: user_uid.to_owned(),
                public_key: public_key.to_owned(),
                server_id: server_id.to_owned(),
                approved_by_uid: actor.user_uid.clone(),
                approved_at: now,
            },
        };
        let records = if self.bindings.get(user_uid).is_some() {
            Vec::new()
        } else {
            self.bindings.insert(binding.clone());
            vec![Record::IdentityBinding(binding.clone())]
        };
        Ok(Outcome::stored(
            super::identity::BindingView::of(&binding),
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
        use super::identity::{APPROVED_BY_CONFIGURATION, IdentityBinding};
        let mut records = Vec::new();
        let taken: Vec<String> = self
            .devices
            .values()
            .filter(|d| d.user_uid == owner_uid && d.revoked_at.is_none())
            .filter(|d| d.public_key != public_key)
            .map(|d| d.device_id.clone())
            .collect();
        for id in taken {
            let device = self.devices.get_mut(&id).expect("listed above");
            device.revoked_at = Some(now);
            records.push(Record::Device(device.clone()));
        }
        let derived = crate::auth::decode_public_key(public_key)
            .map(|k| crate::auth::derive_user_uid(&k))
            .ok();
        let current = self.bindings.get(owner_uid).map(|b| b.public_key.as_str());
        if derived.as_deref() != Some(owner_uid) && current != Some(public_key) {
            let binding = IdentityBinding {
                user_uid: owner_uid.to_owned(),
                public_key: public_key.to_owned(),
                server_id: self.settings().default_server_id.clone(),
                approved_by_uid: APPROVED_BY_CONFIGURATION.to_owned(),
                approved_at: now,
            };
            records.push(Record::IdentityBinding(binding.clone()));
            self.bindings.insert(binding);
        }
        Outcome::stored((), records)
    }

    // ----- voice and moderation hooks -----------------------------------------------------

    fn measure(
        &self,
        server_id: &str,
        kind: ModerationKind,
        target: &str,
        now: Millis,
    ) -> Option<&Moderation> {
        self.moderation
            .get(&(server_id.to_owned(), kind, target.to_owned()))
            .filter(|m| m.in_force(now))
    }

    /// Whether `uid` is banned from `server_id` at `now`.
    pub fn is_banned(&self, server_id: &str, uid: &str, now: Millis) -> bool {
        self.measure(server_id, ModerationKind::Ban, uid, now)
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
        self.server(server_id)?;
        let channel = self.channel(channel_id)?;
        if channel.server_id != server_id {
            return Err(DomainError::NotFound(What::Channel));
        }
        if channel.kind != ChannelKind::Voice {
            return Err(DomainError::NotAVoiceChannel);
        }
        if self.is_banned(server_id, &actor.user_uid, now) {
            return Err(DomainError::Banned);
        }
        if self
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
        let permissions = if self
            .measure(server_id, ModerationKind::Timeout, &actor.user_uid, now)
            .is_some()
        {
            crate::rtc::ticket::Permissions::LISTEN_ONLY
        } else {
            crate::rtc::ticket::Permissions::ALL
        };
        Ok(Outcome::stored(permissions, records))
    }

    /// Marks a ticket used; a second use is `rtc_ticket_replayed`. `exp` is the ticket's expiry
    /// (Unix seconds): used ids are forgotten once their tickets could not verify anyway.
    pub fn consume_ticket(&mut self, jti: &str, exp: i64) -> Result<(), DomainError> {
        if self.used_tickets.contains_key(jti) {
            return Err(DomainError::TicketReplayed);
        }
        self.used_tickets.insert(jti.to_owned(), exp);
        Ok(())
    }

    /// Who may moderate whom: moderators and above, over members of a lower rank.
    fn moderator_over(
        &mut self,
        actor: &Actor,
        server_id: &str,
        target_uid: &str,
        now: Millis,
    ) -> Result<(), DomainError> {
        self.server(server_id)?;
        let role = self
            .current_role(server_id, &actor.user_uid)
            .ok_or(DomainError::NotAMember)?;
        if !role.at_least(Role::Moderator) {
            return Err(DomainError::Forbidden(Needs::Moderator));
        }
        let target_role = self
            .membership(server_id, target_uid)
            .map(|m| m.role)
            .unwrap_or(Role::Member);
        if target_uid == actor.user_uid || target_role.rank() >= role.rank() {
            return Err(DomainError::Forbidden(Needs::HigherRank));
        }
        self.limiter.check(&actor.user_uid, now)
    }

    #[allow(clippy::too_many_arguments)]
    fn set_measure(
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
            server_id: server_id.to_owned(),
            kind,
            target: target.to_owned(),
            until,
            active,
            by_uid: actor.user_uid.clone(),
            at: now,
        };
        self.moderation
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
        let target = Actor {
            user_uid: target_uid.to_owned(),
            device_id: String::new(),
        };
        let left = self.leave(&target, server_id, now)?;
        self.tickets.void_member(server_id, target_uid, now);
        let mut notices = vec![Notice::VoiceKick {
            server_id: server_id.to_owned(),
            user_uid: target_uid.to_owned(),
        }];
        notices.extend(left.notices);
        Ok(Outcome {
            records: left.records,
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
        let target = Actor {
            user_uid: target_uid.to_owned(),
            device_id: String::new(),
        };
        let left = self.leave(&target, server_id, now)?;
        self.tickets.void_member(server_id, target_uid, now);
        let mut records = vec![record];
        records.extend(left.records);
        // The kick first, so the participant gets `rtc.kicked` before the leave removes it.
        let mut notices = vec![Notice::VoiceKick {
            server_id: server_id.to_owned(),
            user_uid: target_uid.to_owned(),
        }];
        notices.extend(left.notices);
        Ok(Outcome {
            records,
            notices,
            ..Outcome::pure(())
        })
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
        let server_id = self.channel(channel_id)?.server_id.clone();
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

    /// Sets a member's role (owner only; the owner's own role is not changed this way).
    pub fn set_role(
        &mut self,
        actor: &Actor,
        server_id: &str,
        target_uid: &str,
        role: Role,
        now: Millis,
    ) -> Result<Outcome<()>, DomainError> {
        self.server(server_id)?;
        if self.current_role(server_id, &actor.user_uid) != Some(Role::Owner) {
            return Err(DomainError::Forbidden(Needs::Owner));
        }
        if role == Role::Owner || target_uid == actor.user_uid {
            return Err(DomainError::OwnershipByClaim);
        }
        let m = self
            .membership(server_id, target_uid)
            .filter(|m| m.is_current())
            .cloned()
            .ok_or(DomainError::NotFound(What::Member))?;
        self.limiter.check(&actor.user_uid, now)?;
        let m = Membership { role, ..m };
        let records = vec![Record::Membership(m.clone())];
        self.index_membership(m);
        Ok(Outcome::stored((), records))
    }

    // ----- realtime -----------------------------------------------------------------------

    /// Whether `actor` may subscribe to `channel_id` on a socket of `server_id`.
    pub fn may_subscribe(
        &self,
        actor: &Actor,
        server_id: &str,
        channel_id: &str,
    ) -> Result<(), DomainError> {
        let channel = self.channel(channel_id)?;
        if channel.server_id != server_id {
            return Err(DomainError::NotFound(What::Channel));
        }
        self.current_role(server_id, &actor.user_uid)
            .map(|_| ())
            .ok_or(DomainError::NotAMember)
    }
}

/// The text rule over everything a new message carries: the body (or the envelope's fields)
/// and the attachments' file names.
fn check_message_text(new: &NewMessage) -> Result<(), DomainError> {
    match &new.content {
        Content::Plain { body } => limits::text_field("body", body)?,
        Content::Envelope {
            ciphertext,
            nonce,
            aad,
            sender_device_id,
            ..
        } => {
            limits::text_field("envelope.ciphertext", ciphertext)?;
            limits::text_field("envelope.nonce", nonce)?;
            limits::text_field("envelope.aad", aad)?;
            limits::text_field("envelope.sender_device_id", sender_device_id)?;
        }
    }
    for attachment in &new.attachments {
        limits::text_field("file_name", &attachment.file_name)?;
    }
    Ok(())
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

/// Renders stored messages for a reader: reply previews (unavailable when the target is
/// deleted or outside what the reader may see), attachment URLs, and the reader's
/// permissions on each.
pub fn render(
    urls: &Urls,
    message: &Message,
    reply_target: Option<&Message>,
    visibility: &Visibility,
    viewer: Option<&Viewer>,
) -> MessageItem {
    let reply_to = message.reply_to_id.as_ref().map(|id| match reply_target {
        Some(t) if t.deleted_at.is_none() && visibility.allows(t.seq) => ReplyTo {
            message_id: id.clone(),
            author_uid: Some(t.author_uid.clone()),
            preview_text: match &t.content {
                Content::Plain { body } => text::preview_text(body),
                Content::Envelope { .. } => String::new(),
            },
            is_unavailable: false,
        },
        _ => ReplyTo {
            message_id: id.clone(),
            author_uid: None,
            preview_text: String::new(),
            is_unavailable: true,
        },
    });
    let (body, envelope) = match &message.content {
        Content::Plain { body } => (Some(body.clone()), None),
        Content::Envelope {
            epoch_id,
            ciphertext,
            nonce,
            aad,
            sender_device_id,
        } => (
            None,
            Some(EnvelopeItem {
                epoch_id: *epoch_id,
                ciphertext: ciphertext.clone(),
                nonce: nonce.clone(),
                aad: aad.clone(),
                sender_device_id: sender_device_id.clone(),
            }),
        ),
    };
    MessageItem {
        id: message.id.clone(),
        channel_id: message.channel_id.clone(),
        server_id: message.server_id.clone(),
        author_uid: message.author_uid.clone(),
        body,
        envelope,
        created_at: views::rfc3339(message.created_at),
        reply_to,
        mentions: message.mentions.clone(),
        attachments: message
            .attachments
            .iter()
            .map(|a| AttachmentItem::of(a, urls))
            .collect(),
        action_permissions: permissions(message, viewer),
    }
}

/// What `viewer` may do with `message`.
pub fn permissions(message: &Message, viewer: Option<&Viewer>) -> ActionPermissions {
    // An anonymous read is what the desktop client does before it acts with its identity:
    // it gets what any member may do.
    let Some(v) = viewer else {
        return ActionPermissions {
            can_react: true,
            can_reply: true,
            can_mark_unread: true,
            can_pin: false,
            can_delete: false,
        };
    };
    ActionPermissions {
        can_react: true,
        can_reply: true,
        can_mark_unread: true,
        can_pin: v.role.at_least(Role::Moderator),
        can_delete: v.user_uid == message.author_uid || v.role.at_least(Role::Moderator),
    }
}

/// JSON of a view (the views are plain data; encoding cannot fail).
pub fn encode<T: serde::Serialize>(value: &T) -> String {
    simd_json::to_string(value).expect("views serialize")
}
