//! What the community's unit tests share: settings, a community with its default server, actors,
//! the seed channels, and posting and reading through the rules with messages kept in the
//! in-memory reference store (`crate::domain::history::MemoryHistory`), as storage would.

use ed25519_dalek::SigningKey;

use super::*;
use crate::domain::history::MemoryHistory;
use crate::domain::records::MessageQuery;

pub const ORIGIN: &str = "https://chat.example.test";

/// The same generator in every test: ids and tokens are the same on every run.
pub fn seeded() -> Entropy {
    Entropy::from_seed([7; 32])
}

pub fn settings(visibility: HistoryVisibility) -> Settings {
    Settings {
        default_server_id: "home".into(),
        default_history_visibility: visibility,
        allow_server_creation: true,
        max_message_bytes: 4000,
        rate_limit_per_minute: 1000,
        handshake_strategy: "token_proof",
        origin: ORIGIN.into(),
        urls: Urls::new(ORIGIN),
        max_devices_per_user: 10,
    }
}

/// A community whose default server was bootstrapped at `at`, owned by `uid_owner`.
pub fn booted(visibility: HistoryVisibility, at: Millis) -> Community {
    let mut c = Community::new(settings(visibility), Snapshot::default(), seeded());
    c.bootstrap_default_server("Home", Some("uid_owner"), at);
    c
}

pub fn community(visibility: HistoryVisibility) -> Community {
    let mut c = Community::new(settings(visibility), Snapshot::default(), seeded());
    let boot = c.bootstrap_default_server("Home", Some("uid_owner"), 1_000);
    assert!(
        boot.value.is_none(),
        "an owner was configured: no claim token"
    );
    c
}

pub fn actor(uid: &str) -> Actor {
    Actor {
        user_uid: uid.into(),
        device_id: format!("dev_{uid}"),
    }
}

pub fn text_channel(c: &mut Community, server: &str, who: &Actor) -> String {
    c.channels_of(Some(who), server, 1)
        .unwrap()
        .value
        .groups
        .iter()
        .flat_map(|g| g.channels.iter())
        .find(|ch| ch.kind == "text")
        .unwrap()
        .id
        .clone()
}

pub fn voice_channel(c: &mut Community, who: &Actor) -> String {
    c.channels_of(Some(who), "home", 1)
        .unwrap()
        .value
        .groups
        .iter()
        .flat_map(|g| g.channels.iter())
        .find(|ch| ch.kind == "voice")
        .unwrap()
        .id
        .clone()
}

/// A plaintext message without attachments, replying to `reply` if given.
pub fn plain(body: impl Into<String>, reply: Option<&Message>) -> NewMessage {
    NewMessage {
        content: Content::Plain { body: body.into() },
        reply_to: reply.cloned(),
        reply_to_id: reply.map(|m| m.id.clone()),
        attachments: Vec::new(),
    }
}

/// The message a post's records store.
pub fn stored_message(records: &[Record]) -> Message {
    records
        .iter()
        .find_map(|r| match r {
            Record::Message(m) => Some(m.clone()),
            _ => None,
        })
        .expect("a post stores a message")
}

/// Posts through the rules and stores the result in `history`, as the authority would.
pub fn post(
    c: &mut Community,
    history: &mut MemoryHistory,
    who: &Actor,
    channel: &str,
    body: &str,
    reply: Option<&Message>,
) -> Message {
    let out = c
        .post_message(who, channel, plain(body, reply), 10)
        .unwrap();
    let message = stored_message(&out.records);
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].kind, "chat.message.created");
    history.insert(message.clone());
    message
}

pub fn read(
    c: &mut Community,
    history: &MemoryHistory,
    who: Option<&Actor>,
    channel: &str,
) -> Result<Vec<String>, DomainError> {
    let access = c.history_access(who, channel, 20)?.value;
    let page = history.query(&MessageQuery {
        channel_id: channel.into(),
        visibility: access.visibility,
        before: None,
        after: None,
        limit: 100,
        include_deleted: false,
    });
    Ok(page
        .messages
        .iter()
        .map(|m| match &m.content {
            Content::Plain { body } => body.clone(),
            Content::Envelope(_) => String::new(),
        })
        .collect())
}

/// A sign-in whose challenge checked out (`crate::auth::challenge`), nonce `n`, issued at `at`.
pub fn sign_in(
    key: &SigningKey,
    device: &str,
    uid: Option<&str>,
    n: u8,
    at: Millis,
    signature_valid: bool,
) -> SignIn {
    SignIn {
        device_id: device.into(),
        public_key: base64_url(key.verifying_key().as_bytes()),
        derived_uid: crate::auth::derive_user_uid(&key.verifying_key()),
        requested_uid: uid.map(str::to_owned),
        challenge: crate::auth::challenge::Verified {
            id: [n; crate::auth::challenge::NONCE_BYTES],
            expires_at: at + CHALLENGE_TTL_MS,
        },
        signature_valid,
    }
}

pub fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn first_channel(c: &Community, kind: ChannelKind) -> Channel {
    let mut channels: Vec<&Channel> = c
        .directory
        .channels
        .values()
        .filter(|ch| ch.server_id == "home" && ch.kind == kind)
        .collect();
    channels.sort_by_key(|ch| ch.position);
    channels[0].clone()
}
