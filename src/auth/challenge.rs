//! Stateless sign-in challenges (wire contract B.1): the server keeps nothing per challenge it
//! hands out. A challenge is `expires_at ‖ nonce ‖ tag`, where the tag is an HMAC under a
//! secret of the process over the expiry, the nonce and what the challenge is for (device,
//! key, requested uid). A flood of challenge requests therefore costs one HMAC each and no
//! memory, and cannot crowd anyone else out.
//!
//! Single use is kept where sign-ins are decided: [`UsedChallenges`] remembers the nonce of
//! every challenge answered, for the challenge's remaining life (at most
//! [`super::CHALLENGE_TTL_SECS`]), in a set of bounded size.
//!
//! Sans-IO: the caller passes the time and the nonce in.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Bytes of the random nonce, which is also the challenge's id in [`UsedChallenges`].
pub const NONCE_BYTES: usize = 16;
/// Bytes of the HMAC-SHA256 tag kept in a challenge (192 bits).
pub const TAG_BYTES: usize = 24;
/// Bytes of a challenge before base64url: expiry (8), nonce, tag.
pub const CHALLENGE_BYTES: usize = 8 + NONCE_BYTES + TAG_BYTES;
/// Characters of a challenge as sent (base64url without padding): 64, so it is also a valid id.
pub const CHALLENGE_CHARS: usize = CHALLENGE_BYTES * 4 / 3;
/// Most challenges answered within one challenge lifetime that are remembered for single use.
/// Reaching it takes this many successful sign-ins (each a signature by the client and a
/// stored session) within 60 s; past it, sign-ins are refused with 429 until the oldest expire.
pub const MAX_USED_CHALLENGES: usize = 1_000_000;

/// Hashed first into every tag, so the secret signs nothing else by accident.
const TAG_DOMAIN: &[u8] = b"openchat-challenge-v1\n";

pub(super) type HmacSha256 = Hmac<Sha256>;

/// Milliseconds since the Unix epoch (the domain's clock unit).
pub type Millis = i64;

/// A fresh nonce from the operating system's generator.
pub fn random_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// What a challenge is issued for; answering it with anything else fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeFor<'a> {
    pub device_id: &'a str,
    pub key: &'a VerifyingKey,
    pub user_uid: Option<&'a str>,
}

/// A challenge that checked out: its id for single use, and when it stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub id: [u8; NONCE_BYTES],
    pub expires_at: Millis,
}

/// Why a challenge was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// Not a challenge of this server, or issued for another device, key or uid.
    #[error("the challenge is unknown, used or expired")]
    Invalid,
    /// A genuine challenge, past its expiry.
    #[error("the challenge is unknown, used or expired")]
    Expired,
}

/// The secret challenges are signed with. Random per process: a restart voids the challenges
/// outstanding (they live 60 s), and nothing about it is stored.
#[derive(Clone)]
pub struct ChallengeKey {
    secret: [u8; 32],
}

impl std::fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeKey(redacted)")
    }
}

impl ChallengeKey {
    pub fn from_secret(secret: [u8; 32]) -> ChallengeKey {
        ChallengeKey { secret }
    }

    pub fn random() -> ChallengeKey {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        ChallengeKey { secret }
    }

    /// An HMAC under the secret, started with `domain` so each kind of challenge signs only
    /// its own bytes.
    pub(super) fn mac(&self, domain: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(domain);
        mac
    }

    fn tag(
        &self,
        expires_at: Millis,
        nonce: &[u8; NONCE_BYTES],
        what: &ChallengeFor<'_>,
    ) -> HmacSha256 {
        let mut mac = self.mac(TAG_DOMAIN);
        mac.update(&expires_at.to_be_bytes());
        mac.update(nonce);
        // Length-prefixed, so no two different inputs hash the same bytes.
        for part in [what.device_id.as_bytes(), what.key.as_bytes().as_slice()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        match what.user_uid {
            None => mac.update(&[0]),
            Some(uid) => {
                mac.update(&[1]);
                mac.update(&(uid.len() as u64).to_be_bytes());
                mac.update(uid.as_bytes());
            }
        }
        mac
    }

    /// A challenge for `what`, valid until `expires_at`, with a fresh random nonce.
    pub fn issue(&self, what: &ChallengeFor<'_>, expires_at: Millis) -> String {
        self.issue_with_nonce(what, expires_at, random_nonce())
    }

    /// [`ChallengeKey::issue`] with the nonce given (tests).
    pub fn issue_with_nonce(
        &self,
        what: &ChallengeFor<'_>,
        expires_at: Millis,
        nonce: [u8; NONCE_BYTES],
    ) -> String {
        let tag = self.tag(expires_at, &nonce, what).finalize().into_bytes();
        let mut bytes = [0u8; CHALLENGE_BYTES];
        bytes[..8].copy_from_slice(&expires_at.to_be_bytes());
        bytes[8..8 + NONCE_BYTES].copy_from_slice(&nonce);
        bytes[8 + NONCE_BYTES..].copy_from_slice(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks that `challenge` was issued by this key for `what` and is still valid at `now`.
    /// Says nothing about single use: see [`UsedChallenges`].
    pub fn verify(
        &self,
        challenge: &str,
        what: &ChallengeFor<'_>,
        now: Millis,
    ) -> Result<Verified, ChallengeError> {
        if challenge.len() != CHALLENGE_CHARS {
            return Err(ChallengeError::Invalid);
        }
        let mut bytes = [0u8; CHALLENGE_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(challenge, &mut bytes) {
            Ok(CHALLENGE_BYTES) => {}
            _ => return Err(ChallengeError::Invalid),
        }
        let expires_at = Millis::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let nonce: [u8; NONCE_BYTES] = bytes[8..8 + NONCE_BYTES].try_into().expect("nonce");
        // `verify_truncated_left` compares in constant time.
        self.tag(expires_at, &nonce, what)
            .verify_truncated_left(&bytes[8 + NONCE_BYTES..])
            .map_err(|_| ChallengeError::Invalid)?;
        if expires_at <= now {
            return Err(ChallengeError::Expired);
        }
        Ok(Verified {
            id: nonce,
            expires_at,
        })
    }
}

/// Why [`UsedChallenges::consume`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumed {
    /// Answered before.
    Replayed,
    /// [`MAX_USED_CHALLENGES`] unexpired challenges answered: try again shortly.
    Full,
}

/// The ids of challenges already answered, each kept until its challenge expires.
#[derive(Debug)]
pub struct UsedChallenges {
    used: HashMap<[u8; NONCE_BYTES], Millis>,
    capacity: usize,
}

impl Default for UsedChallenges {
    fn default() -> UsedChallenges {
        UsedChallenges::with_capacity(MAX_USED_CHALLENGES)
    }
}

impl UsedChallenges {
    pub fn with_capacity(capacity: usize) -> UsedChallenges {
        UsedChallenges {
            used: HashMap::new(),
            capacity,
        }
    }

    /// Marks `challenge` answered; refuses one answered before, or when the set is full of
    /// unexpired ids.
    pub fn consume(&mut self, challenge: &Verified, now: Millis) -> Result<(), Consumed> {
        if self.used.contains_key(&challenge.id) {
            return Err(Consumed::Replayed);
        }
        if self.used.len() >= self.capacity {
            self.sweep(now);
            if self.used.len() >= self.capacity {
                return Err(Consumed::Full);
            }
        }
        self.used.insert(challenge.id, challenge.expires_at);
        Ok(())
    }

    /// Forgets the ids of expired challenges (they can no longer verify anyway).
    pub fn sweep(&mut self, now: Millis) {
        self.used.retain(|_, expires_at| *expires_at > now);
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8) -> VerifyingKey {
        SigningKey::from_bytes(&[seed; 32]).verifying_key()
    }

    const NOW: Millis = 1_800_000_000_000;

    #[test]
    fn a_challenge_verifies_for_what_it_was_issued_for() {
        let secret = ChallengeKey::from_secret([1; 32]);
        let k = key(7);
        let what = ChallengeFor {
            device_id: "desktop_1",
            key: &k,
            user_uid: None,
        };
        let text = secret.issue(&what, NOW + 60_000);
        assert_eq!(text.len(), CHALLENGE_CHARS);
        assert!(crate::domain::text::is_valid_id(&text));
        let verified = secret.verify(&text, &what, NOW).unwrap();
        assert_eq!(verified.expires_at, NOW + 60_000);
        assert_ne!(secret.issue(&what, NOW + 60_000), text, "nonces are random");
    }

    #[test]
    fn anything_else_fails() {
        let secret = ChallengeKey::from_secret([1; 32]);
        let (k, other_key) = (key(7), key(8));
        let what = ChallengeFor {
            device_id: "desktop_1",
            key: &k,
            user_uid: Some("uid_a"),
        };
        let text = secret.issue_with_nonce(&what, NOW + 60_000, [9; NONCE_BYTES]);
        let invalid = Err(ChallengeError::Invalid);
        for wrong in [
            ChallengeFor {
                device_id: "desktop_2",
                ..what
            },
            ChallengeFor {
                key: &other_key,
                ..what
            },
            ChallengeFor {
                user_uid: None,
                ..what
            },
            ChallengeFor {
                user_uid: Some("uid_b"),
                ..what
            },
        ] {
            assert_eq!(secret.verify(&text, &wrong, NOW), invalid, "{wrong:?}");
        }
        // Another process's secret.
        assert_eq!(
            ChallengeKey::from_secret([2; 32]).verify(&text, &what, NOW),
            invalid
        );
        // Expired, at and after its expiry.
        assert_eq!(
            secret.verify(&text, &what, NOW + 60_000),
            Err(ChallengeError::Expired)
        );
        // A moved expiry breaks the tag.
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        bytes[7] ^= 1;
        assert_eq!(
            secret.verify(&URL_SAFE_NO_PAD.encode(&bytes), &what, NOW),
            invalid
        );
        // Any flipped bit of nonce or tag, truncation, garbage.
        for i in 8..CHALLENGE_BYTES {
            let mut bad = URL_SAFE_NO_PAD.decode(&text).unwrap();
            bad[i] ^= 0x40;
            assert_eq!(
                secret.verify(&URL_SAFE_NO_PAD.encode(&bad), &what, NOW),
                invalid,
                "byte {i}"
            );
        }
        for bad in [
            "",
            &text[..63],
            "!".repeat(64).as_str(),
            &format!("{text}A"),
        ] {
            assert_eq!(secret.verify(bad, &what, NOW), invalid, "{bad:?}");
        }
    }

    #[test]
    fn device_and_key_fields_cannot_bleed_into_each_other() {
        // Length prefixes: moving a character from the device id into the uid changes the tag.
        let secret = ChallengeKey::from_secret([1; 32]);
        let k = key(7);
        let a = ChallengeFor {
            device_id: "ab",
            key: &k,
            user_uid: Some("c"),
        };
        let b = ChallengeFor {
            device_id: "a",
            key: &k,
            user_uid: Some("bc"),
        };
        let text = secret.issue(&a, NOW + 1000);
        assert_eq!(secret.verify(&text, &b, NOW), Err(ChallengeError::Invalid));
    }

    #[test]
    fn single_use_for_the_challenges_life() {
        let mut used = UsedChallenges::with_capacity(2);
        let a = Verified {
            id: [1; NONCE_BYTES],
            expires_at: NOW + 10,
        };
        let b = Verified {
            id: [2; NONCE_BYTES],
            expires_at: NOW + 20,
        };
        let c = Verified {
            id: [3; NONCE_BYTES],
            expires_at: NOW + 30,
        };
        assert_eq!(used.consume(&a, NOW), Ok(()));
        assert_eq!(used.consume(&a, NOW), Err(Consumed::Replayed));
        assert_eq!(used.consume(&b, NOW), Ok(()));
        // Full of live ids: refused, nothing forgotten.
        assert_eq!(used.consume(&c, NOW + 5), Err(Consumed::Full));
        assert_eq!(used.consume(&a, NOW + 5), Err(Consumed::Replayed));
        // Once `a` expired its slot is free (and `a` itself could no longer verify).
        assert_eq!(used.consume(&c, NOW + 10), Ok(()));
        assert_eq!(used.len(), 2);
        used.sweep(NOW + 30);
        assert!(used.is_empty());
    }

    #[test]
    fn the_key_is_not_printed() {
        let secret = ChallengeKey::from_secret([0xAB; 32]);
        let shown = format!("{secret:?}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab, "),
            "{shown}"
        );
        assert_eq!(shown, "ChallengeKey(redacted)");
    }
}
