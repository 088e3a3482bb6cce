//! The community API as a client speaks it: one [`Client`] per identity (anonymous, identity
//! headers as the desktop client sends them, or a bearer session), each request on a fresh
//! connection with the raw HTTP client of [`super::http`]. Also the session sign-in of wire
//! contract B.1, done by hand from the contract (Ed25519 over `openchat-auth-v1\n{origin}\n{challenge}`).

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use simd_json::prelude::*;

use super::http::{Conn, Reply};
use super::json::{Json, JsonPath, encode};
use super::multipart::Multipart;

/// A fresh uid in the desktop client's shape: `uid_` + 8 hex.
pub fn new_uid() -> String {
    format!("uid_{:08x}", rand::random::<u32>())
}

/// A fresh device id in the desktop client's shape: `desktop_` + 8 characters.
pub fn new_device() -> String {
    format!("desktop_{:08x}", rand::random::<u32>())
}

#[derive(Clone, Debug)]
pub enum Identity {
    Anonymous,
    Headers { uid: String, device: String },
    Bearer(String),
}

#[derive(Clone, Debug)]
pub struct Client {
    pub addr: SocketAddr,
    pub identity: Identity,
}

impl Client {
    pub fn anonymous(addr: SocketAddr) -> Client {
        Client {
            addr,
            identity: Identity::Anonymous,
        }
    }

    /// Headers mode, a new uid and device.
    pub fn user(addr: SocketAddr) -> Client {
        Client::with_uid(addr, &new_uid())
    }

    pub fn with_uid(addr: SocketAddr, uid: &str) -> Client {
        Client {
            addr,
            identity: Identity::Headers {
                uid: uid.to_owned(),
                device: new_device(),
            },
        }
    }

    pub fn bearer(addr: SocketAddr, token: &str) -> Client {
        Client {
            addr,
            identity: Identity::Bearer(token.to_owned()),
        }
    }

    /// The uid in headers mode, `None` for another identity.
    pub fn uid_opt(&self) -> Option<&str> {
        match &self.identity {
            Identity::Headers { uid, .. } => Some(uid),
            _ => None,
        }
    }

    /// The uid in headers mode.
    pub fn uid(&self) -> &str {
        match &self.identity {
            Identity::Headers { uid, .. } => uid,
            other => panic!("no uid for {other:?}"),
        }
    }

    pub fn device(&self) -> &str {
        match &self.identity {
            Identity::Headers { device, .. } => device,
            other => panic!("no device for {other:?}"),
        }
    }

    /// Sends one request; `body` is `(content type, bytes)`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Reply {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nOrigin: null\r\n");
        match &self.identity {
            Identity::Anonymous => {}
            Identity::Headers { uid, device } => {
                head.push_str(&format!(
                    "X-OpenChat-User-UID: {uid}\r\nX-OpenChat-Device-ID: {device}\r\n"
                ));
            }
            Identity::Bearer(token) => head.push_str(&format!("Authorization: Bearer {token}\r\n")),
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let mut bytes = match body {
            Some((content_type, data)) => {
                head.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    data.len()
                ));
                let mut bytes = head.into_bytes();
                bytes.extend_from_slice(data);
                bytes
            }
            None if matches!(method, "POST" | "PUT") => {
                head.push_str("Content-Length: 0\r\n\r\n");
                head.into_bytes()
            }
            None => {
                head.push_str("\r\n");
                head.into_bytes()
            }
        };
        let mut conn = Conn::open(self.addr);
        conn.send(&std::mem::take(&mut bytes));
        let reply = conn
            .read_reply()
            .unwrap_or_else(|| panic!("no reply to {method} {path}"));
        reply.assert_cors();
        reply
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], None)
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &Json) -> Reply {
        self.request(
            "POST",
            path,
            &[],
            Some(("application/json", encode(body).as_bytes())),
        )
    }

    pub fn put(&self, path: &str, body: &Json) -> Reply {
        self.request(
            "PUT",
            path,
            &[],
            Some(("application/json", encode(body).as_bytes())),
        )
    }

    pub fn post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        self.request("POST", path, &[], Some((content_type, body)))
    }

    pub fn post_multipart(&self, path: &str, form: Multipart) -> Reply {
        let (content_type, body) = form.finish();
        self.post_raw(path, &content_type, &body)
    }

    /// A request that must answer `status` with JSON; returns the document.
    pub fn expect(&self, status: u16, reply: Reply) -> Json {
        let _ = self;
        assert_eq!(reply.status, status, "{}", reply.text());
        reply.json()
    }

    // ----- the flows the desktop client runs -----------------------------------------------

    /// `POST /v1/channels/{id}/messages` with a JSON body; must answer 201.
    pub fn send(&self, channel_id: &str, body: &str) -> Json {
        let reply = self.post(
            &format!("/v1/channels/{channel_id}/messages"),
            &simd_json::json!({ "body": body }),
        );
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json().at("message").clone()
    }

    /// `GET /v1/channels/{id}/messages?{query}`; must answer 200.
    pub fn messages(&self, channel_id: &str, query: &str) -> Json {
        let reply = self.get(&format!("/v1/channels/{channel_id}/messages?{query}"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }

    /// The ids of a message page, oldest first.
    pub fn message_ids(&self, channel_id: &str, query: &str) -> Vec<String> {
        ids_of(&self.messages(channel_id, query), "messages")
    }

    /// The server's groups (`GET /v1/servers/{id}/channels`).
    pub fn groups(&self, server_id: &str) -> Json {
        let reply = self.get(&format!("/v1/servers/{server_id}/channels"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }

    /// The first text channel of a server, the one the client opens.
    pub fn first_text_channel(&self, server_id: &str) -> String {
        let groups = self.groups(server_id);
        groups
            .arr_at("groups")
            .iter()
            .flat_map(|g| g.arr_at("channels").iter())
            .find(|c| c.str_at("type") == "text")
            .map(|c| c.str_at("id").to_owned())
            .unwrap_or_else(|| panic!("no text channel in {}", encode(&groups)))
    }

    /// `POST /v1/servers` with a display name; must answer 201.
    pub fn create_server(&self, display_name: &str) -> Json {
        let reply = self.post(
            "/v1/servers",
            &simd_json::json!({"display_name": display_name, "description": "made by a test", "banner_preset": "forest"}),
        );
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json()
    }
}

/// The `id` of every object in the array at `path`.
/// The default server and its first text channel, as `reader` (a member from then on) sees it.
pub fn default_channel(server: &super::server::TestServer, reader: &Client) -> (String, String) {
    let server_id = default_server_id(server.addr);
    let channel = reader.first_text_channel(&server_id);
    (server_id, channel)
}

/// A new server owned by `owner` (created and claimed, as the client does); its id.
pub fn owned_server(owner: &Client, name: &str) -> String {
    let created = owner.create_server(name);
    let server_id = created.str_at("server.server_id").to_owned();
    let claimed = owner.post(
        &format!("/v1/servers/{server_id}/ownership:claim"),
        &simd_json::json!({"claim_token": created.str_at("ownership_claim.token")}),
    );
    assert_eq!(claimed.status, 200, "{}", claimed.text());
    server_id
}

pub fn ids_of(doc: &Json, path: &str) -> Vec<String> {
    doc.arr_at(path)
        .iter()
        .map(|m| m.str_at("id").to_owned())
        .collect()
}

/// The instance's default server id, from the capabilities document.
pub fn default_server_id(addr: SocketAddr) -> String {
    let caps = Client::anonymous(addr).get("/v1/client/capabilities");
    assert_eq!(caps.status, 200);
    caps.json().str_at("server_id").to_owned()
}

/// An Ed25519 identity of a device.
pub struct DeviceKey {
    pub key: SigningKey,
    pub device_id: String,
}

impl DeviceKey {
    pub fn new() -> DeviceKey {
        let seed: [u8; 32] = rand::random();
        DeviceKey {
            key: SigningKey::from_bytes(&seed),
            device_id: new_device(),
        }
    }

    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    /// The uid this key owns (wire contract B.1), computed from the contract: `uid_` and 32 hex
    /// of SHA-256 over `openchat-uid-v1\n` and the 32 key bytes.
    pub fn derived_uid(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"openchat-uid-v1\n");
        hasher.update(self.key.verifying_key().as_bytes());
        let hex: String = hasher
            .finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("uid_{hex}")
    }

    /// The signature of wire contract B.1.
    pub fn sign(&self, origin: &str, challenge: &str) -> String {
        let message = format!("openchat-auth-v1\n{origin}\n{challenge}");
        URL_SAFE_NO_PAD.encode(self.key.sign(message.as_bytes()).to_bytes())
    }

    /// `POST /v1/auth/challenge`; returns the challenge string.
    pub fn challenge(&self, addr: SocketAddr, uid: Option<&str>) -> String {
        let mut body = simd_json::json!({"device_id": self.device_id.as_str(), "public_key": self.public_key()});
        if let Some(uid) = uid {
            body.insert("user_uid", uid).unwrap();
        }
        let reply = Client::anonymous(addr).post("/v1/auth/challenge", &body);
        assert!(
            reply.status == 200 || reply.status == 201,
            "{}",
            reply.text()
        );
        let doc = reply.json();
        assert!(doc.try_at("expires_at").is_some(), "{}", reply.text());
        doc.str_at("challenge").to_owned()
    }

    /// `POST /v1/auth/session` for `challenge`, signed for `origin`; the raw reply.
    pub fn open_session(
        &self,
        addr: SocketAddr,
        origin: &str,
        uid: Option<&str>,
        challenge: &str,
    ) -> Reply {
        let mut body = simd_json::json!({
            "device_id": self.device_id.as_str(),
            "public_key": self.public_key(),
            "challenge": challenge,
            "signature": self.sign(origin, challenge),
        });
        if let Some(uid) = uid {
            body.insert("user_uid", uid).unwrap();
        }
        Client::anonymous(addr).post("/v1/auth/session", &body)
    }

    /// Challenge and session in one go; returns the session document.
    pub fn sign_in(&self, addr: SocketAddr, origin: &str, uid: Option<&str>) -> Json {
        let challenge = self.challenge(addr, uid);
        let reply = self.open_session(addr, origin, uid, &challenge);
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json()
    }
}

impl DeviceKey {
    /// `POST /v1/servers/{server_id}/sessions/challenge` (wire contract A.10); the raw reply.
    pub fn server_challenge(&self, addr: SocketAddr, server_id: &str, uid: Option<&str>) -> Reply {
        let mut body = simd_json::json!({"device_id": self.device_id.as_str(), "public_key": self.public_key()});
        if let Some(uid) = uid {
            body.insert("user_uid", uid).unwrap();
        }
        Client::anonymous(addr).post(
            &format!("/v1/servers/{server_id}/sessions/challenge"),
            &body,
        )
    }

    /// What the client does with a challenge's payload: signs it as given, only if it starts
    /// with `openchat-session-v1\n` and is at most 1024 characters.
    pub fn sign_payload(&self, payload: &str) -> String {
        assert!(
            payload.starts_with("openchat-session-v1\n") && payload.len() <= 1024,
            "{payload}"
        );
        URL_SAFE_NO_PAD.encode(self.key.sign(payload.as_bytes()).to_bytes())
    }

    /// `POST /v1/servers/{server_id}/sessions`; the raw reply.
    pub fn server_session(
        &self,
        addr: SocketAddr,
        server_id: &str,
        challenge_id: &str,
        signature: &str,
    ) -> Reply {
        Client::anonymous(addr).post(
            &format!("/v1/servers/{server_id}/sessions"),
            &simd_json::json!({"challenge_id": challenge_id, "signature": signature}),
        )
    }

    /// A verified session of `server_id` the way the newest client opens one; the session
    /// document.
    pub fn server_sign_in(&self, addr: SocketAddr, server_id: &str, uid: Option<&str>) -> Json {
        let challenge = self.server_challenge(addr, server_id, uid);
        assert_eq!(challenge.status, 201, "{}", challenge.text());
        let challenge = challenge.json();
        let signature = self.sign_payload(challenge.str_at("payload"));
        let reply = self.server_session(
            addr,
            server_id,
            challenge.str_at("challenge_id"),
            &signature,
        );
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json()
    }
}

/// Whether `value` is an RFC 3339 UTC timestamp the way the contract writes them.
pub fn is_rfc3339_utc(value: &Json) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() >= 20
            && s.ends_with('Z')
            && s.as_bytes()[4] == b'-'
            && s.as_bytes()[10] == b'T'
            && time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .is_ok()
    })
}
