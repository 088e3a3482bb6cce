//! Verified-session challenges (wire contract A.10). `POST /v1/servers/{id}/sessions/challenge`
//! hands out a `challenge_id` and a `payload` to sign; `POST …/sessions` brings back only the
//! id and the signature. Like the sign-in challenges of B.1 ([`super::challenge`]) they are
//! stateless: the id carries what the challenge binds (expiry, nonce, key, uid, device) and an
//! HMAC under the process secret over those bytes and the server id, so nothing is stored
//! until a session opens. Single use is kept by the same
//! [`UsedChallenges`](super::challenge::UsedChallenges) as B.1: one session system, two
//! entry points.
//!
//! Sans-IO: the caller passes the time and the nonce in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{PUBLIC_KEY_LENGTH, VerifyingKey};
use hmac::Mac;

use super::challenge::{ChallengeError, ChallengeKey, Millis, NONCE_BYTES, TAG_BYTES, Verified};

/// The first line of every payload a client signs for a verified session (the client signs
/// nothing else).
pub const SESSION_PAYLOAD_DOMAIN: &str = "openchat-session-v1";

/// Longest payload the client agrees to sign.
pub const MAX_PAYLOAD_CHARS: usize = 1024;

/// Longest uid or device id a challenge carries (the id rule: 64 characters).
pub const MAX_PART_BYTES: usize = 64;

/// Format of the bytes inside a challenge id; a change voids outstanding challenges (60 s).
const FORMAT_VERSION: u8 = 1;

/// Hashed first into every tag, so the secret signs nothing else by accident.
const TAG_DOMAIN: &[u8] = b"openchat-session-challenge-v1\n";

/// Bytes of a challenge id before base64url at most: version, expiry, nonce, key, two
/// length-prefixed ids and the tag.
const MAX_ID_BYTES: usize =
    1 + 8 + NONCE_BYTES + PUBLIC_KEY_LENGTH + 2 * (1 + MAX_PART_BYTES) + TAG_BYTES;

/// Longest `challenge_id` accepted (unpadded base64url, 282 characters), checked before any
/// decoding.
pub const MAX_CHALLENGE_ID_CHARS: usize = (MAX_ID_BYTES * 4).div_ceil(3);

/// What a verified-session challenge is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFor<'a> {
    pub server_id: &'a str,
    pub user_uid: &'a str,
    pub device_id: &'a str,
    pub key: &'a VerifyingKey,
}

/// A challenge id that checked out: what it was issued for (the server id is the caller's),
/// its id for single use, and the nonce as the payload spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub user_uid: String,
    pub device_id: String,
    pub key: VerifyingKey,
    pub verified: Verified,
}

impl Opened {
    /// The nonce as it appears in the payload (base64url, unpadded).
    pub fn nonce_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.verified.id)
    }
}

/// The text the client signs: `openchat-session-v1\n{origin}\n{server_id}\n{user_uid}\n
/// {device_id}\n{nonce}\n{expires_at}`. `origin` is the instance's public base URL without a
/// trailing `/`; `expires_at` is the RFC 3339 text the challenge response carries. Every part
/// is an id, a base URL or a timestamp, so none holds a line break.
pub fn session_payload(
    origin: &str,
    what: &SessionFor<'_>,
    nonce_text: &str,
    expires_at_text: &str,
) -> String {
    let origin = origin.strip_suffix('/').unwrap_or(origin);
    format!(
        "{SESSION_PAYLOAD_DOMAIN}\n{origin}\n{}\n{}\n{}\n{nonce_text}\n{expires_at_text}",
        what.server_id, what.user_uid, what.device_id
    )
}

fn tag_over(key: &ChallengeKey, server_id: &str, body: &[u8]) -> super::challenge::HmacSha256 {
    let mut mac = key.mac(TAG_DOMAIN);
    mac.update(&(server_id.len() as u64).to_be_bytes());
    mac.update(server_id.as_bytes());
    mac.update(body);
    mac
}

impl ChallengeKey {
    /// A verified-session challenge id for `what`, valid until `expires_at`. `None` when the
    /// uid or the device id is longer than [`MAX_PART_BYTES`] (the caller checks ids first).
    pub fn issue_session(
        &self,
        what: &SessionFor<'_>,
        expires_at: Millis,
        nonce: [u8; NONCE_BYTES],
    ) -> Option<String> {
        if what.user_uid.len() > MAX_PART_BYTES || what.device_id.len() > MAX_PART_BYTES {
            return None;
        }
        let mut body = Vec::with_capacity(MAX_ID_BYTES);
        body.push(FORMAT_VERSION);
        body.extend_from_slice(&expires_at.to_be_bytes());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(what.key.as_bytes());
        for part in [what.user_uid, what.device_id] {
            body.push(part.len() as u8);
            body.extend_from_slice(part.as_bytes());
        }
        let tag = tag_over(self, what.server_id, &body)
            .finalize()
            .into_bytes();
        body.extend_from_slice(&tag[..TAG_BYTES]);
        Some(URL_SAFE_NO_PAD.encode(body))
    }

    /// Checks that `challenge_id` was issued by this key for `server_id` and is still valid at
    /// `now`, and returns what it binds. Says nothing about single use.
    pub fn open_session_challenge(
        &self,
        challenge_id: &str,
        server_id: &str,
        now: Millis,
    ) -> Result<Opened, ChallengeError> {
        let invalid = ChallengeError::Invalid;
        if challenge_id.len() > MAX_CHALLENGE_ID_CHARS {
            return Err(invalid);
        }
        let bytes = URL_SAFE_NO_PAD.decode(challenge_id).map_err(|_| invalid)?;
        let Some(body_len) = bytes.len().checked_sub(TAG_BYTES) else {
            return Err(invalid);
        };
        let (body, tag) = bytes.split_at(body_len);
        // `verify_truncated_left` compares in constant time; nothing is parsed before it.
        tag_over(self, server_id, body)
            .verify_truncated_left(tag)
            .map_err(|_| invalid)?;
        let mut reader = Reader(body);
        if reader.take(1) != Some(&[FORMAT_VERSION]) {
            return Err(invalid);
        }
        let expires_at = Millis::from_be_bytes(reader.array().ok_or(invalid)?);
        let nonce: [u8; NONCE_BYTES] = reader.array().ok_or(invalid)?;
        let key_bytes: [u8; PUBLIC_KEY_LENGTH] = reader.array().ok_or(invalid)?;
        let user_uid = reader.text().ok_or(invalid)?;
        let device_id = reader.text().ok_or(invalid)?;
        if !reader.0.is_empty() {
            return Err(invalid);
        }
        let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| invalid)?;
        if expires_at <= now {
            return Err(ChallengeError::Expired);
        }
        Ok(Opened {
            user_uid,
            device_id,
            key,
            verified: Verified {
                id: nonce,
                expires_at,
            },
        })
    }
}

/// Reads the fields of a challenge id's body in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn text(&mut self) -> Option<String> {
        let len = usize::from(*self.take(1)?.first()?);
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const NOW: Millis = 1_800_000_000_000;

    fn key(seed: u8) -> VerifyingKey {
        SigningKey::from_bytes(&[seed; 32]).verifying_key()
    }

    fn what(k: &VerifyingKey) -> SessionFor<'_> {
        SessionFor {
            server_id: "srv_default",
            user_uid: "uid_0123456789abcdef0123456789abcdef",
            device_id: "desktop_ab12cd34",
            key: k,
        }
    }

    #[test]
    fn a_challenge_opens_to_what_it_was_issued_for() {
        let secret = ChallengeKey::from_secret([1; 32]);
        let k = key(7);
        let id = secret
            .issue_session(&what(&k), NOW + 60_000, [5; NONCE_BYTES])
            .unwrap();
        assert!(id.len() <= MAX_CHALLENGE_ID_CHARS);
        let opened = secret
            .open_session_challenge(&id, "srv_default", NOW)
            .unwrap();
        assert_eq!(opened.user_uid, "uid_0123456789abcdef0123456789abcdef");
        assert_eq!(opened.device_id, "desktop_ab12cd34");
        assert_eq!(opened.key, k);
        assert_eq!(opened.verified.id, [5; NONCE_BYTES]);
        assert_eq!(opened.verified.expires_at, NOW + 60_000);
        assert_eq!(opened.nonce_text(), "BQUFBQUFBQUFBQUFBQUFBQ");
    }

    #[test]
    fn another_server_another_secret_a_flipped_bit_or_expiry_fails() {
        let secret = ChallengeKey::from_secret([1; 32]);
        let k = key(7);
        let id = secret
            .issue_session(&what(&k), NOW + 60_000, [5; NONCE_BYTES])
            .unwrap();
        let invalid = Err(ChallengeError::Invalid);
        assert_eq!(
            secret.open_session_challenge(&id, "srv_other", NOW),
            invalid
        );
        assert_eq!(
            ChallengeKey::from_secret([2; 32]).open_session_challenge(&id, "srv_default", NOW),
            invalid
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&id).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            let flipped = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(
                secret.open_session_challenge(&flipped, "srv_default", NOW),
                invalid,
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        for cut in [0, 1, TAG_BYTES, id.len() - 1] {
            assert_eq!(
                secret.open_session_challenge(&id[..cut], "srv_default", NOW),
                invalid
            );
        }
        assert_eq!(
            secret.open_session_challenge(&"A".repeat(10_000), "srv_default", NOW),
            invalid
        );
        assert_eq!(
            secret.open_session_challenge("not base64!", "srv_default", NOW),
            invalid
        );
        assert_eq!(
            secret.open_session_challenge(&id, "srv_default", NOW + 60_000),
            Err(ChallengeError::Expired)
        );
    }

    #[test]
    fn ids_longer_than_the_id_rule_are_refused_and_the_longest_fit_the_limits() {
        let secret = ChallengeKey::from_secret([1; 32]);
        let k = key(7);
        let long = "u".repeat(MAX_PART_BYTES);
        let longest = SessionFor {
            user_uid: &long,
            device_id: &long,
            ..what(&k)
        };
        let id = secret
            .issue_session(&longest, NOW + 60_000, [0; NONCE_BYTES])
            .unwrap();
        assert_eq!(id.len(), MAX_CHALLENGE_ID_CHARS);
        let too_long = "u".repeat(MAX_PART_BYTES + 1);
        let refused = SessionFor {
            device_id: &too_long,
            ..what(&k)
        };
        assert_eq!(secret.issue_session(&refused, NOW, [0; NONCE_BYTES]), None);
        let payload = session_payload(
            &format!("https://{}.example/", "h".repeat(200)),
            &SessionFor {
                server_id: &long,
                ..longest
            },
            &URL_SAFE_NO_PAD.encode([0u8; NONCE_BYTES]),
            "2027-01-01T00:00:00.000Z",
        );
        assert!(payload.len() <= MAX_PAYLOAD_CHARS, "{}", payload.len());
    }

    #[test]
    fn the_payload_names_every_binding_in_order() {
        let k = key(7);
        let payload = session_payload(
            "https://chat.example/",
            &what(&k),
            "BQUFBQUFBQUFBQUFBQUFBQ",
            "2027-01-15T08:00:00.000Z",
        );
        assert_eq!(
            payload,
            "openchat-session-v1\nhttps://chat.example\nsrv_default\nuid_0123456789abcdef0123456789abcdef\ndesktop_ab12cd34\nBQUFBQUFBQUFBQUFBQUFBQ\n2027-01-15T08:00:00.000Z"
        );
    }
}
