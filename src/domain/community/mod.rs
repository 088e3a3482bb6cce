//! The community state machine: every server, category, channel, membership, profile, avatar
//! asset, claim token, device and session of the instance, held in memory by one owner (the
//! authority, `crate::authority`), plus the rules that decide every command.
//!
//! A command checks everything first and changes nothing when it refuses; when it succeeds it
//! changes the in-memory state and returns an [`Outcome`]: its answer, the [`Record`]s storage
//! must commit for it (atomically), and the realtime events to publish once they are committed.
//! Messages themselves are not kept here (only the message order counter): the caller loads
//! them from storage and hands them in where a rule needs one (reply targets, deletes, acks).
//!
//! [`Community`] is the façade the authority calls. Its state is held by sub-stores, one per
//! concern, each in its own file with the commands of that concern and their tests:
//! `directory` (servers, categories, channels, claim tokens; the server commands),
//! `layout` (the layout commands), `members` (memberships, spans, roles, online counts),
//! `messages` (history access, posting, deleting, rendering), `acks` (read acks and
//! mention lookups), `profiles` (profiles and avatars), `sessions` (devices, sessions,
//! challenges, bindings), `moderation` (bans, timeouts, locks, kicks, the voice grant),
//! `tickets` (join tickets between signing and use) and `access` (the read rule).
//! [`commands`] names every command the authority takes as a type of its own.

use std::collections::HashMap;

use super::entropy::Entropy;
use super::error::DomainError;
use super::model::*;
use super::records::{Record, Snapshot, Visibility};
use super::views::*;

mod access;
mod acks;
mod cases;
pub mod commands;
mod directory;
pub mod e2ee;
#[cfg(test)]
pub(crate) mod fixtures;
mod invites;
mod layout;
mod members;
mod messages;
mod moderation;
mod privacy;
mod profiles;
mod roles;
mod server_profiles;
mod sessions;
mod tickets;
mod votes;

pub use access::{ReplayRule, Subject, readable};
pub use commands::Command;
pub use messages::{permissions, render};
pub use tickets::{MAX_TRACKED_TICKETS, TicketBook};

use acks::ReadAcks;
use cases::CaseBook;
pub use cases::{ActionAsk, Report};
use directory::Directory;
pub use directory::SettingsChange;
use invites::Invites;
use members::Roster;
use moderation::Measures;
pub use privacy::PrivacyChange;
use privacy::PrivacyStore;
use profiles::ProfileStore;
use server_profiles::ServerProfiles;
use sessions::Sessions;

/// How long a server's ownership claim token stays valid.
pub const CLAIM_TOKEN_TTL_MS: Millis = 24 * 3600 * 1000;
/// The default server's claim token (logged once at first start) lives longer: an operator may
/// not claim on the first day.
pub const DEFAULT_SERVER_CLAIM_TTL_MS: Millis = 30 * 24 * 3600 * 1000;
/// A challenge must be signed within this time (wire contract B.1).
pub const CHALLENGE_TTL_MS: Millis = 60 * 1000;
/// Lifetime of a bearer session.
pub const SESSION_TTL_MS: Millis = 30 * 24 * 3600 * 1000;
/// Attachments per message: the rule is in `domain::limits`, with the other message sizes.
pub use super::limits::MAX_ATTACHMENTS_PER_MESSAGE;
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
/// storage: the rate-limit windows (or a failed write would refill every bucket), the answered
/// sign-in challenges (or an answered one would work again), the issued, used and voided join
/// tickets (or a used ticket, or one voided by a leave, kick or ban, would work again), and the
/// open realtime sockets behind member status (the sockets stay open).
#[derive(Debug, Default)]
pub struct Volatile {
    limiter: super::rate::RateLimiter,
    used_challenges: crate::auth::challenge::UsedChallenges,
    tickets: TicketBook,
    online: HashMap<(ServerId, UserUid), u32>,
    links: e2ee::devices::Links,
}

/// Who is asking: a uid and the device it speaks from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor {
    pub user_uid: UserUid,
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
    /// `OPENCHAT_MAX_DEVICES_PER_USER`: active devices one user may have.
    pub max_devices_per_user: usize,
}

/// Who a realtime event goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every socket of the server.
    Server,
    /// Only this user's sockets of the server.
    User(String),
    /// Only the sockets of these users (sorted): the events of a private channel, and the
    /// layout as the roles that see it see it.
    Users(Vec<String>),
}

/// A realtime event to publish after the command's records are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub server_id: String,
    /// Set for server-wide events (they are logged for resume); `None` for private ones.
    pub event_id: Option<EventId>,
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
    /// The uid was put in a timeout in the server: in a call it becomes listen-only at once
    /// (the SFU stops forwarding what it publishes).
    VoiceMute { server_id: String, user_uid: String },
    /// A channel became private: only sockets of `allowed` (sorted uids) go on following its
    /// presence and typing.
    ChannelRestricted {
        server_id: String,
        channel_id: String,
        allowed: Vec<String>,
    },
    /// A session was revoked: the realtime sockets opened with its token close, and so does
    /// the voice participation of its device.
    SessionRevoked {
        token_hash: String,
        user_uid: String,
        device_id: String,
    },
    /// The uid's presence in the server became hidden or visible again (its privacy at
    /// `version`): others see it leave or come back in every channel it follows there.
    PresenceVisibility {
        server_id: String,
        user_uid: String,
        hidden: bool,
        version: i64,
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
    /// Redeeming an invite: like `Connect`, and the only way into an invite-only server.
    Invite,
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

#[derive(Debug)]
pub struct Community {
    settings: Settings,
    /// Where ids and tokens come from (given by the caller: the domain draws no randomness).
    entropy: Entropy,
    directory: Directory,
    roster: Roster,
    profiles: ProfileStore,
    server_profiles: ServerProfiles,
    privacy: PrivacyStore,
    sessions: Sessions,
    read_acks: ReadAcks,
    measures: Measures,
    invites: Invites,
    cases: CaseBook,
    /// The MLS delivery service's state (Part C).
    keys: e2ee::KeyStore,
    /// Issued, used and voided join tickets.
    tickets: TicketBook,
    limiter: super::rate::RateLimiter,
    last_seq: Seq,
    /// Highest moderation audit seq handed out.
    last_audit_seq: i64,
    last_event_ids: HashMap<String, EventId>,
}

impl Community {
    /// Builds the state from what storage holds; ids and tokens are drawn from `entropy`.
    pub fn new(settings: Settings, mut snapshot: Snapshot, entropy: Entropy) -> Community {
        let keys = e2ee::KeyStore::new(std::mem::take(&mut snapshot.keys));
        let mut c = Community {
            limiter: super::rate::RateLimiter::new(settings.rate_limit_per_minute),
            settings,
            entropy,
            directory: Directory::default(),
            roster: Roster::default(),
            profiles: ProfileStore::default(),
            server_profiles: ServerProfiles::default(),
            privacy: PrivacyStore::default(),
            sessions: Sessions::default(),
            read_acks: ReadAcks::default(),
            measures: Measures::default(),
            invites: Invites::default(),
            cases: CaseBook::default(),
            keys,
            tickets: TicketBook::default(),
            last_seq: snapshot.last_seq,
            last_audit_seq: snapshot.last_audit_seq,
            last_event_ids: snapshot.last_event_ids,
        };
        let d = &mut c.directory;
        for s in snapshot.servers {
            d.servers.insert(s.id.clone(), s);
        }
        for cat in snapshot.categories {
            d.categories.insert(cat.id.clone(), cat);
        }
        for ch in snapshot.channels {
            d.channels.insert(ch.id.clone(), ch);
        }
        for t in snapshot.claim_tokens {
            d.claim_tokens.insert(t.token_hash.clone(), t);
        }
        for m in snapshot.memberships {
            c.roster.index(m);
        }
        for p in snapshot.profiles {
            c.profiles.by_uid.insert(p.user_uid.clone(), p);
        }
        for a in snapshot.avatar_assets {
            c.profiles.avatar_assets.insert(a.id.clone(), a);
        }
        for d in snapshot.devices {
            c.sessions.devices.insert(d.device_id.clone(), d);
        }
        for s in snapshot.sessions {
            c.sessions.by_token.insert(s.token_hash.clone(), s);
        }
        c.sessions.bindings = super::identity::Bindings::new(snapshot.identity_bindings);
        for m in snapshot.moderation {
            c.measures
                .by_target
                .insert((m.server_id.clone().into(), m.kind, m.target.clone()), m);
        }
        for i in snapshot.invites {
            c.invites.insert(i);
        }
        for p in snapshot.privacy {
            c.privacy.insert(p);
        }
        for p in snapshot.server_profiles {
            c.server_profiles.insert(p);
        }
        for case in snapshot.cases {
            c.cases.cases.insert(case.id.clone(), case);
        }
        for a in snapshot.mod_actions {
            c.cases.insert_action(a);
        }
        for (server_id, policy) in snapshot.vote_policies {
            c.cases.policies.insert(server_id.into(), policy);
        }
        for p in snapshot.proposals {
            c.cases.proposals.insert(p.id.clone(), p);
        }
        for v in snapshot.votes {
            c.cases.insert_vote(v);
        }
        c.cases.evidence.extend(snapshot.evidence);
        for a in snapshot.read_acks {
            c.read_acks
                .by_reader
                .insert((a.user_uid.clone(), a.channel_id.clone()), a);
        }
        c
    }

    fn settings(&self) -> &Settings {
        &self.settings
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
    pub fn last_event_id(&self, server_id: &str) -> EventId {
        self.last_event_ids
            .get(server_id)
            .copied()
            .unwrap_or_default()
    }

    /// The uid's role when it is a current member.
    pub fn current_role(&self, server_id: &str, uid: &str) -> Option<Role> {
        self.roster.current_role(server_id, uid)
    }

    pub fn channel_info(&self, channel_id: &str) -> Option<&Channel> {
        self.directory.channels.get(channel_id)
    }

    pub fn server_exists(&self, server_id: &str) -> bool {
        self.directory.servers.contains_key(server_id)
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
            server_id: server_id.to_owned().into(),
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
        let next = self.last_event_id(server_id).next();
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

    // ----- what lives only in memory, and housekeeping -----------------------------------

    /// Takes out the state that lives only in memory and that a reload from storage must not
    /// lose (see [`Volatile`]); this state is left with none of it.
    pub fn take_volatile(&mut self) -> Volatile {
        Volatile {
            limiter: std::mem::take(&mut self.limiter),
            used_challenges: std::mem::take(&mut self.sessions.used_challenges),
            tickets: std::mem::take(&mut self.tickets),
            online: std::mem::take(&mut self.roster.online),
            links: self.keys.take_volatile(),
        }
    }

    /// Puts back what [`Community::take_volatile`] took from the state this one replaces.
    pub fn restore_volatile(&mut self, volatile: Volatile) {
        self.limiter = volatile.limiter;
        self.sessions.used_challenges = volatile.used_challenges;
        self.tickets = volatile.tickets;
        self.roster.online = volatile.online;
        self.keys.restore_volatile(volatile.links);
    }

    /// Removes expired challenges, sessions, rate-limit buckets, tickets and measures (called
    /// now and then by the authority).
    pub fn sweep(&mut self, now: Millis) {
        self.sessions.used_challenges.sweep(now);
        self.invites.sweep(now);
        self.sessions.by_token.retain(|_, s| s.expires_at > now);
        self.limiter.sweep(now);
        self.tickets.sweep(now);
        self.measures.by_target.retain(|_, m| m.in_force(now));
        self.keys.sweep(now);
    }

    /// Takes a write token for work done before the authority sees the command (uploads are
    /// checked and stored first): a user over the limit is refused before that work.
    pub fn take_write_token(&mut self, uid: &str, now: Millis) -> Result<(), DomainError> {
        self.limiter.check(uid, now)
    }
}

/// JSON of a view (the views are plain data; encoding cannot fail).
pub fn encode<T: serde::Serialize>(value: &T) -> String {
    simd_json::to_string(value).expect("views serialize")
}
