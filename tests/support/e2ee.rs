//! A device of an end-to-end encrypted conversation, as a real client is one: an Ed25519
//! identity (its session key and its MLS signature key), a bearer session, and its MLS state
//! ([`super::mls_client::MlsDevice`], openmls). Helpers speak wire contract Part C.

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use simd_json::json;
use simd_json::prelude::*;

use super::api::{Client, DeviceKey};
use super::http::Reply;
use super::json::{Json, JsonPath, encode};
use super::mls_client::{Bundle, MlsDevice};
use super::server::PUBLIC_BASE_URL;

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url from the server")
}

pub struct Device {
    pub key: DeviceKey,
    pub uid: String,
    pub client: Client,
    pub mls: MlsDevice,
    pub addr: SocketAddr,
    /// Every blob this device sent or received: none may show in a log line.
    pub secrets: Vec<String>,
    /// What it decrypted, by ciphertext: MLS opens each message once (its key is deleted
    /// after use), so a client keeps the plaintext, as this one does.
    opened: std::collections::HashMap<String, String>,
}

impl Device {
    /// A new device signed in as its key's own uid.
    pub fn sign_in(addr: SocketAddr) -> Device {
        let key = DeviceKey::new();
        let session = key.sign_in(addr, PUBLIC_BASE_URL, None);
        Device::from_session(addr, key, &session)
    }

    /// A device whose key is already bound to `uid` (linked), signing in as it.
    pub fn sign_in_as(addr: SocketAddr, key: DeviceKey, uid: &str) -> Device {
        let session = key.sign_in(addr, PUBLIC_BASE_URL, Some(uid));
        Device::from_session(addr, key, &session)
    }

    fn from_session(addr: SocketAddr, key: DeviceKey, session: &Json) -> Device {
        let mls = MlsDevice::new(&key.device_id, key.key.to_bytes());
        assert_eq!(mls.identity_key(), key.key.verifying_key().to_bytes());
        Device {
            uid: session.str_at("user_uid").to_owned(),
            client: Client::bearer(addr, session.str_at("token")),
            mls,
            key,
            addr,
            secrets: Vec::new(),
            opened: Default::default(),
        }
    }

    pub fn id(&self) -> &str {
        &self.key.device_id
    }

    pub fn token(&self) -> String {
        match &self.client.identity {
            super::api::Identity::Bearer(t) => t.clone(),
            _ => unreachable!("devices have sessions"),
        }
    }

    fn remember(&mut self, blob: &str) {
        self.secrets.push(blob.to_owned());
    }

    /// Uploads `n` one-time packages and a last-resort one.
    pub fn upload_packages(&mut self, n: usize) -> Json {
        let mut packages: Vec<Json> = self
            .mls
            .key_packages(n)
            .iter()
            .map(|p| json!({"data": b64(p), "last_resort": false}))
            .collect();
        packages.push(json!({"data": b64(&self.mls.last_resort_package()), "last_resort": true}));
        for p in &packages {
            self.remember(p.str_at("data"));
        }
        self.client.expect(
            201,
            self.client
                .post("/v1/keys/packages", &json!({"packages": packages})),
        )
    }

    /// Claims one package per device of each uid; `(device_id, package bytes)`.
    pub fn claim(&mut self, uids: &[&str]) -> Vec<(String, Vec<u8>, bool)> {
        let reply = self
            .client
            .post("/v1/keys/packages:claim", &json!({"user_uids": uids}));
        let doc = self.client.expect(200, reply);
        doc.arr_at("packages")
            .iter()
            .map(|p| {
                self.secrets.push(p.str_at("data").to_owned());
                (
                    p.str_at("device_id").to_owned(),
                    unb64(p.str_at("data")),
                    p.bool_at("last_resort"),
                )
            })
            .collect()
    }

    /// `POST /v1/channels/{id}/commits` with `bundle` (and the genesis for epoch 0).
    pub fn submit(&mut self, channel_id: &str, bundle: &Bundle, genesis: Option<&[u8]>) -> Reply {
        let mut body = json!({
            "commit": b64(&bundle.commit),
            "group_info": b64(&bundle.group_info),
        });
        if let Some(w) = &bundle.welcome {
            body.insert("welcome", b64(w)).unwrap();
        }
        if let Some(g) = genesis {
            body.insert("genesis_group_info", b64(g)).unwrap();
        }
        for key in ["commit", "group_info", "welcome", "genesis_group_info"] {
            if let Some(v) = body.get(key).and_then(|v| v.as_str()) {
                let v = v.to_owned();
                self.remember(&v);
            }
        }
        self.client
            .post(&format!("/v1/channels/{channel_id}/commits"), &body)
    }

    /// The mailbox items after `after`.
    pub fn mailbox(&mut self, after: i64) -> Vec<Json> {
        let doc = self.client.expect(
            200,
            self.client.get(&format!("/v1/keys/mailbox?after={after}")),
        );
        doc.arr_at("items").to_vec()
    }

    /// Joins the group of the newest Welcome in the mailbox; the channel id.
    pub fn join_from_mailbox(&mut self) -> String {
        let items = self.mailbox(0);
        let welcome = items
            .iter()
            .filter(|i| i.str_at("kind") == "welcome")
            .last()
            .unwrap_or_else(|| panic!("{} has no welcome: {items:?}", self.id()));
        let blob = welcome.str_at("blob").to_owned();
        let seq = welcome.i64_at("seq");
        self.remember(&blob);
        let channel = self.mls.join(&unb64(&blob));
        assert_eq!(channel, welcome.str_at("channel_id"));
        let acked = self.client.expect(
            200,
            self.client
                .post("/v1/keys/mailbox:ack", &json!({"up_to_seq": seq})),
        );
        assert!(acked.i64_at("deleted") >= 1, "{}", encode(&acked));
        channel
    }

    /// Encrypts `text` in the device's current epoch and posts it; the raw reply.
    pub fn post(&mut self, channel_id: &str, text: &str) -> Reply {
        let ciphertext = b64(&self.mls.encrypt(channel_id, text.as_bytes()));
        self.remember(&ciphertext);
        let epoch = self.mls.epoch(channel_id);
        self.client.post(
            &format!("/v1/channels/{channel_id}/messages"),
            &json!({"envelope": {"epoch": epoch, "ciphertext": ciphertext, "sender_device_id": self.id()}}),
        )
    }

    /// Applies every commit of the log after the device's epoch.
    pub fn catch_up(&mut self, channel_id: &str) {
        let epoch = self.mls.epoch(channel_id);
        let log = self.client.expect(
            200,
            self.client.get(&format!(
                "/v1/channels/{channel_id}/commits?after_epoch={epoch}"
            )),
        );
        for c in log.arr_at("commits") {
            let commit = c.str_at("commit").to_owned();
            if c.str_at("sender_device_id") == self.id() {
                panic!("{} has a commit of its own it did not merge", self.id());
            }
            self.mls
                .process_commit(channel_id, &unb64(&commit))
                .unwrap_or_else(|e| {
                    panic!(
                        "{} cannot process epoch {}: {e}",
                        self.id(),
                        c.i64_at("epoch")
                    )
                });
        }
    }

    /// The plaintexts of the channel's history this device can decrypt, oldest first, and how
    /// many messages it could not decrypt.
    pub fn read_history(&mut self, channel_id: &str) -> (Vec<String>, usize) {
        let page = self.client.expect(
            200,
            self.client
                .get(&format!("/v1/channels/{channel_id}/messages?limit=200")),
        );
        let mut plain = Vec::new();
        let mut failed = 0;
        for m in page.arr_at("messages") {
            assert!(m.is_null_at("body"), "{}", encode(m));
            match self.open(channel_id, m.str_at("envelope.ciphertext")) {
                Some(text) => plain.push(text),
                None => failed += 1,
            }
        }
        (plain, failed)
    }

    /// Decrypts a message (base64url ciphertext) once and remembers the plaintext.
    pub fn open(&mut self, channel_id: &str, ciphertext: &str) -> Option<String> {
        if let Some(text) = self.opened.get(ciphertext) {
            return Some(text.clone());
        }
        let text = self.mls.decrypt(channel_id, &unb64(ciphertext)).ok()?;
        let text = String::from_utf8(text).expect("utf-8 plaintext");
        self.opened.insert(ciphertext.to_owned(), text.clone());
        Some(text)
    }

    /// The envelope epochs of the channel's history as this device's user may read it.
    pub fn history_epochs(&self, channel_id: &str) -> Vec<u64> {
        let page = self.client.expect(
            200,
            self.client
                .get(&format!("/v1/channels/{channel_id}/messages?limit=200")),
        );
        page.arr_at("messages")
            .iter()
            .map(|m| m.i64_at("envelope.epoch") as u64)
            .collect()
    }
}
