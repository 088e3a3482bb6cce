//! Session crypto (wire-contract B.1): Ed25519 device keys, the signed challenge message, uids
//! derived from keys, stateless signed challenges ([`challenge`]), and random tokens that are
//! stored only as hashes.
//!
//! Sans-IO: the caller stores token hashes and used challenge ids and reads the clock; this
//! module only makes and checks bytes. The randomness comes from the operating system's
//! generator.

pub mod challenge;
pub mod evidence_key;
pub mod session_challenge;

use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use ed25519_dalek::{PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, Signature, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A challenge is valid this long after it is issued, and only once.
pub const CHALLENGE_TTL_SECS: u64 = 60;

/// A session token is valid this long after it is issued (30 days), unless revoked.
pub const SESSION_TTL_SECS: u64 = 30 * 24 * 3600;

/// Random bytes in a token (256 bits).
pub const RANDOM_BYTES: usize = 32;

/// The first line of every signed message; changing it invalidates every client's signatures.
pub const SIGNED_MESSAGE_DOMAIN: &str = "openchat-auth-v1";

/// Lowercase hex characters of SHA-256 in a derived uid (128 bits), after [`DERIVED_UID_PREFIX`]:
/// enough that nobody can search for a key whose uid is someone else's.
pub const DERIVED_UID_HEX_CHARS: usize = 32;

/// Hashed before the key bytes when deriving a uid, so the digest means "a uid" and nothing else.
pub const DERIVED_UID_LABEL: &[u8] = b"openchat-uid-v1\n";

/// The prefix of a uid derived from a key (the same prefix the desktop client uses).
pub const DERIVED_UID_PREFIX: &str = "uid_";

/// Longest base64 text accepted for a key or a signature before decoding, so hostile input is
/// refused before any work proportional to its size (a 64-byte signature is 88 padded chars).
pub const MAX_ENCODED_CHARS: usize = 128;

/// base64url that accepts both unpadded and padded input, and refuses non-canonical trailing
/// bits (so one key or signature has exactly one accepted spelling without padding).
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a key or a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not base64url, or not the expected number of bytes.
    #[error("invalid base64url encoding or length")]
    InvalidEncoding,
    /// 32 bytes, but not a usable Ed25519 public key (not a curve point, or of small order).
    #[error("invalid Ed25519 public key")]
    InvalidPublicKey,
    /// The signature does not verify for this key and message.
    #[error("signature verification failed")]
    InvalidSignature,
}

impl AuthError {
    /// The stable `code` of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::InvalidEncoding => "invalid_encoding",
            AuthError::InvalidPublicKey => "invalid_public_key",
            AuthError::InvalidSignature => "invalid_signature",
        }
    }
}

/// Decodes exactly `N` bytes of base64url (padded or not).
fn decode_fixed<const N: usize>(b64url: &str) -> Result<[u8; N], AuthError> {
    if b64url.len() > MAX_ENCODED_CHARS {
        return Err(AuthError::InvalidEncoding);
    }
    let bytes = URL_SAFE_LENIENT
        .decode(b64url)
        .map_err(|_| AuthError::InvalidEncoding)?;
    bytes.try_into().map_err(|_| AuthError::InvalidEncoding)
}

/// Decodes a base64url blob (padded or not) of at most `max_chars` characters: the MLS
/// messages and opaque key blobs of wire contract C.
pub fn decode_blob(b64url: &str, max_chars: usize) -> Result<Vec<u8>, AuthError> {
    if b64url.len() > max_chars {
        return Err(AuthError::InvalidEncoding);
    }
    URL_SAFE_LENIENT
        .decode(b64url)
        .map_err(|_| AuthError::InvalidEncoding)
}

/// base64url without padding: how the server writes blobs.
pub fn encode_blob(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a device's Ed25519 public key: base64url of exactly 32 bytes, padded or not.
///
/// Bytes that are not a point on the curve are [`AuthError::InvalidPublicKey`], and so are weak
/// keys (points of small order), for which a signature proves nothing.
pub fn decode_public_key(b64url: &str) -> Result<VerifyingKey, AuthError> {
    let bytes: [u8; PUBLIC_KEY_LENGTH] = decode_fixed(b64url)?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| AuthError::InvalidPublicKey)?;
    if key.is_weak() {
        return Err(AuthError::InvalidPublicKey);
    }
    Ok(key)
}

/// The bytes a device signs: `openchat-auth-v1\n{origin}\n{challenge}`. `origin` is the
/// instance's public base URL; one trailing `/` is removed, so `https://a.example/` and
/// `https://a.example` sign the same message.
pub fn signed_message(origin: &str, challenge: &str) -> Vec<u8> {
    let origin = origin.strip_suffix('/').unwrap_or(origin);
    format!("{SIGNED_MESSAGE_DOMAIN}\n{origin}\n{challenge}").into_bytes()
}

/// Checks a base64url signature over [`signed_message`]`(origin, challenge)` with Ed25519's
/// strict verification (no malleable or small-order forms).
pub fn verify_signature(
    key: &VerifyingKey,
    origin: &str,
    challenge: &str,
    signature_b64url: &str,
) -> Result<(), AuthError> {
    verify_signature_over(key, &signed_message(origin, challenge), signature_b64url)
}

/// Checks a base64url Ed25519 signature over `message` with strict verification (the
/// verified-session payload of wire contract A.10 and the sign-in message of B.1).
pub fn verify_signature_over(
    key: &VerifyingKey,
    message: &[u8],
    signature_b64url: &str,
) -> Result<(), AuthError> {
    let bytes: [u8; SIGNATURE_LENGTH] = decode_fixed(signature_b64url)?;
    let signature = Signature::from_bytes(&bytes);
    key.verify_strict(message, &signature)
        .map_err(|_| AuthError::InvalidSignature)
}

/// The uid a key owns (wire contract B.1): `uid_` and the first 32 lowercase hex characters of
/// SHA-256 over [`DERIVED_UID_LABEL`] and the 32 key bytes. Any other uid needs a binding.
pub fn derive_user_uid(key: &VerifyingKey) -> String {
    let mut hasher = Sha256::new();
    hasher.update(DERIVED_UID_LABEL);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    let mut uid = String::from(DERIVED_UID_PREFIX);
    uid.push_str(&lower_hex(&digest[..DERIVED_UID_HEX_CHARS / 2]));
    uid
}

/// The one spelling of a key: base64url of its 32 bytes without padding.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// A fresh bearer token: `prefix` and 32 random bytes as base64url without padding. Store only
/// [`hash_token`] of it.
pub fn new_token(prefix: &str) -> String {
    token_from_bytes(prefix, random_bytes())
}

/// The token spelling of [`new_token`] for random bytes drawn elsewhere (the domain draws them
/// from its seeded `crate::domain::entropy::Entropy`).
pub fn token_from_bytes(prefix: &str, bytes: [u8; RANDOM_BYTES]) -> String {
    let mut token = String::from(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut token);
    token
}

/// A secret seed from the OS, for a generator that must be as unguessable as the OS itself
/// (the domain's `Entropy`).
pub fn os_seed() -> [u8; RANDOM_BYTES] {
    random_bytes()
}

/// What is stored for a token: SHA-256 of its bytes in lowercase hex (64 characters). A token
/// has 256 random bits, so a fast unsalted hash is enough to make a leaked table useless.
pub fn hash_token(token: &str) -> String {
    lower_hex(&Sha256::digest(token.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths, not on where they
/// differ. Different lengths are unequal (lengths are not treated as secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn random_bytes() -> [u8; RANDOM_BYTES] {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

pub fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0F)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE;
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    const ORIGIN: &str = "https://chat.example";

    fn signing_key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn public_b64(key: &SigningKey) -> String {
        URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())
    }

    fn sign(key: &SigningKey, origin: &str, challenge: &str) -> String {
        URL_SAFE_NO_PAD.encode(key.sign(&signed_message(origin, challenge)).to_bytes())
    }

    #[test]
    fn signature_round_trip() {
        let key = signing_key();
        let public = decode_public_key(&public_b64(&key)).unwrap();
        assert_eq!(public, key.verifying_key());
        let challenge = "a-challenge";
        let signature = sign(&key, ORIGIN, challenge);
        assert_eq!(
            verify_signature(&public, ORIGIN, challenge, &signature),
            Ok(())
        );
    }

    #[test]
    fn padded_encodings_are_accepted() {
        let key = signing_key();
        let padded_key = URL_SAFE.encode(key.verifying_key().as_bytes());
        assert!(padded_key.ends_with('='));
        let public = decode_public_key(&padded_key).unwrap();
        let signature = URL_SAFE.encode(key.sign(&signed_message(ORIGIN, "c")).to_bytes());
        assert!(signature.ends_with("=="));
        assert_eq!(verify_signature(&public, ORIGIN, "c", &signature), Ok(()));
    }

    #[test]
    fn wrong_origin_fails() {
        let key = signing_key();
        let signature = sign(&key, ORIGIN, "challenge");
        assert_eq!(
            verify_signature(
                &key.verifying_key(),
                "https://evil.example",
                "challenge",
                &signature
            ),
            Err(AuthError::InvalidSignature)
        );
    }

    #[test]
    fn wrong_challenge_fails() {
        let key = signing_key();
        let signature = sign(&key, ORIGIN, "challenge-1");
        assert_eq!(
            verify_signature(&key.verifying_key(), ORIGIN, "challenge-2", &signature),
            Err(AuthError::InvalidSignature)
        );
    }

    #[test]
    fn tampered_signature_fails() {
        let key = signing_key();
        let message = signed_message(ORIGIN, "c");
        let good = key.sign(&message).to_bytes();
        for i in [0, 31, 32, 63] {
            let mut bad = good;
            bad[i] ^= 0x01;
            let bad = URL_SAFE_NO_PAD.encode(bad);
            assert_eq!(
                verify_signature(&key.verifying_key(), ORIGIN, "c", &bad),
                Err(AuthError::InvalidSignature),
                "byte {i}"
            );
        }
    }

    #[test]
    fn another_keys_signature_fails() {
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let signature = sign(&other, ORIGIN, "c");
        assert_eq!(
            verify_signature(&signing_key().verifying_key(), ORIGIN, "c", &signature),
            Err(AuthError::InvalidSignature)
        );
    }

    #[test]
    fn signature_encoding_errors() {
        let key = signing_key().verifying_key();
        let short = URL_SAFE_NO_PAD.encode([0u8; 63]);
        for bad in ["", "not base64!", "a+b/", &short, &"A".repeat(200)] {
            assert_eq!(
                verify_signature(&key, ORIGIN, "c", bad),
                Err(AuthError::InvalidEncoding),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn key_of_31_or_33_bytes_fails() {
        let key = signing_key().verifying_key();
        let short = URL_SAFE_NO_PAD.encode(&key.as_bytes()[..31]);
        assert_eq!(decode_public_key(&short), Err(AuthError::InvalidEncoding));
        let mut long = key.as_bytes().to_vec();
        long.push(0);
        assert_eq!(
            decode_public_key(&URL_SAFE_NO_PAD.encode(long)),
            Err(AuthError::InvalidEncoding)
        );
    }

    #[test]
    fn key_encoding_errors() {
        let standard = base64::engine::general_purpose::STANDARD_NO_PAD;
        // Find a key whose standard base64 uses + or /, which base64url refuses.
        let key = (0u8..=255)
            .map(|seed| SigningKey::from_bytes(&[seed; 32]).verifying_key())
            .find(|k| standard.encode(k.as_bytes()).contains(['+', '/']))
            .unwrap();
        assert_eq!(
            decode_public_key(&standard.encode(key.as_bytes())),
            Err(AuthError::InvalidEncoding)
        );
        assert_eq!(decode_public_key(""), Err(AuthError::InvalidEncoding));
        assert_eq!(decode_public_key(" AAAA"), Err(AuthError::InvalidEncoding));
        // Non-canonical trailing bits: the last char of 32 bytes carries 4 data bits.
        let canonical = public_b64(&signing_key());
        let last = canonical.chars().last().unwrap();
        let index = alphabet::URL_SAFE.as_str().find(last).unwrap();
        let sloppy_char = alphabet::URL_SAFE.as_str().as_bytes()[index | 1] as char;
        if sloppy_char != last {
            let sloppy = format!("{}{sloppy_char}", &canonical[..canonical.len() - 1]);
            assert_eq!(decode_public_key(&sloppy), Err(AuthError::InvalidEncoding));
        }
    }

    #[test]
    fn weak_and_invalid_points_fail() {
        // The identity point (small order) decodes as a curve point but is weak.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            decode_public_key(&URL_SAFE_NO_PAD.encode(identity)),
            Err(AuthError::InvalidPublicKey)
        );
        // All zeros is the point of order 4 (y = 0): weak as well.
        assert_eq!(
            decode_public_key(&URL_SAFE_NO_PAD.encode([0u8; 32])),
            Err(AuthError::InvalidPublicKey)
        );
        // y = 2 is not on the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert_eq!(
            decode_public_key(&URL_SAFE_NO_PAD.encode(off_curve)),
            Err(AuthError::InvalidPublicKey)
        );
    }

    #[test]
    fn signed_message_layout() {
        assert_eq!(
            signed_message("https://chat.example", "abc"),
            b"openchat-auth-v1\nhttps://chat.example\nabc"
        );
        assert_eq!(
            signed_message("https://chat.example/", "abc"),
            signed_message("https://chat.example", "abc")
        );
        // Only one slash is removed.
        assert_eq!(
            signed_message("https://chat.example//", "abc"),
            b"openchat-auth-v1\nhttps://chat.example/\nabc"
        );
    }

    #[test]
    fn trailing_slash_on_origin_verifies_the_same() {
        let key = signing_key();
        let signature = sign(&key, "https://chat.example/", "c");
        assert_eq!(
            verify_signature(
                &key.verifying_key(),
                "https://chat.example",
                "c",
                &signature
            ),
            Ok(())
        );
    }

    #[test]
    fn uid_derivation_is_stable() {
        // Both values cross-checked with an independent Ed25519 and SHA-256 implementation.
        let key = signing_key().verifying_key();
        assert_eq!(
            lower_hex(key.as_bytes()),
            "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
        );
        let uid = derive_user_uid(&key);
        assert_eq!(uid, "uid_bfa9ed100288947a887203f659805981");
        assert_eq!(uid.len(), DERIVED_UID_PREFIX.len() + DERIVED_UID_HEX_CHARS);
        assert!(crate::domain::text::is_valid_id(&uid));
        let mut labelled = b"openchat-uid-v1\n".to_vec();
        labelled.extend_from_slice(key.as_bytes());
        let expected = lower_hex(&Sha256::digest(&labelled));
        assert_eq!(&uid[4..], &expected[..32]);
        // Not the unlabelled digest of the key (the derivation of earlier versions).
        assert_ne!(&uid[4..], &lower_hex(&Sha256::digest(key.as_bytes()))[..32]);
        assert_ne!(
            derive_user_uid(&SigningKey::from_bytes(&[8u8; 32]).verifying_key()),
            uid
        );
    }

    #[test]
    fn a_key_has_one_spelling() {
        let key = signing_key().verifying_key();
        let canonical = encode_public_key(&key);
        assert_eq!(canonical, public_b64(&signing_key()));
        let padded = URL_SAFE.encode(key.as_bytes());
        assert_eq!(
            encode_public_key(&decode_public_key(&padded).unwrap()),
            canonical
        );
    }

    #[test]
    fn tokens_carry_their_prefix() {
        let token = new_token("ocs_");
        assert!(token.starts_with("ocs_"));
        assert_eq!(token.len(), 4 + 43);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&token[4..]).unwrap().len(),
            RANDOM_BYTES
        );
        assert_ne!(new_token("ocs_"), token);
        assert_eq!(new_token("").len(), 43);
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(
            hash_token(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let token = new_token("ocs_");
        assert_eq!(hash_token(&token), hash_token(&token));
        assert_ne!(hash_token(&token), hash_token(&new_token("ocs_")));
    }

    #[test]
    fn constant_time_eq_cases() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(!constant_time_eq(&[0x80], &[0x00]));
    }

    #[test]
    fn error_codes_are_stable() {
        assert_eq!(AuthError::InvalidPublicKey.code(), "invalid_public_key");
        assert_eq!(AuthError::InvalidSignature.code(), "invalid_signature");
        assert_eq!(AuthError::InvalidEncoding.code(), "invalid_encoding");
        assert_eq!(
            AuthError::InvalidSignature.to_string(),
            "signature verification failed"
        );
    }

    #[test]
    fn ttls() {
        assert_eq!(CHALLENGE_TTL_SECS, 60);
        assert_eq!(SESSION_TTL_SECS, 2_592_000);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_origin_and_challenge_round_trip(seed in any::<[u8; 32]>(), origin in "\\PC{0,40}", challenge in "[A-Za-z0-9_-]{0,64}") {
            let key = SigningKey::from_bytes(&seed);
            let public = decode_public_key(&public_b64(&key)).unwrap();
            let signature = sign(&key, &origin, &challenge);
            prop_assert_eq!(verify_signature(&public, &origin, &challenge, &signature), Ok(()));
            let other = format!("{challenge}x");
            prop_assert_eq!(
                verify_signature(&public, &origin, &other, &signature),
                Err(AuthError::InvalidSignature)
            );
        }

        #[test]
        fn decoding_arbitrary_text_never_panics(text in "\\PC{0,100}") {
            let _ = decode_public_key(&text);
            let key = signing_key().verifying_key();
            prop_assert!(verify_signature(&key, ORIGIN, "c", &text).is_err());
        }

        #[test]
        fn constant_time_eq_matches_eq(a in prop::collection::vec(any::<u8>(), 0..40), b in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(constant_time_eq(&a, &b), a == b);
            prop_assert!(constant_time_eq(&a, &a.clone()));
        }

        #[test]
        fn token_hash_shape(token in "\\PC{0,80}") {
            let hash = hash_token(&token);
            prop_assert_eq!(hash.len(), 64);
            prop_assert!(hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
    }
}
