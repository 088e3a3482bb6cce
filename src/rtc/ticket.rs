//! Join tickets (wire contract A.8): short-lived, single-use, HMAC-SHA256-signed claims that
//! let one device of one user join one voice channel of one server with given permissions.
//!
//! Format: `base64url(claims JSON) "." base64url(HMAC-SHA256(secret, first part))`. The
//! signature is checked (in constant time) before the claims are parsed, so a forged ticket
//! costs one HMAC and nothing else. Single use is enforced by whoever consumes tickets (the
//! authority keeps the `jti`s of unexpired tickets it has seen).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How long a ticket is valid after it is issued.
pub const TICKET_TTL_SECS: i64 = 60;
/// Longest ticket text accepted for checking (a real one is about 400 characters).
pub const MAX_TICKET_CHARS: usize = 2048;
/// Shortest accepted `OPENCHAT_RTC_TICKET_SECRET`, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// What a participant may do in the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    pub speak: bool,
    pub video: bool,
    pub screenshare: bool,
}

impl Permissions {
    pub const ALL: Permissions = Permissions {
        speak: true,
        video: true,
        screenshare: true,
    };
    /// A member in timeout: may listen and watch, not send.
    pub const LISTEN_ONLY: Permissions = Permissions {
        speak: false,
        video: false,
        screenshare: false,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub server_id: String,
    pub channel_id: String,
    pub user_uid: String,
    pub device_id: String,
    #[serde(flatten)]
    pub permissions: Permissions,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Unique id of this ticket (single use).
    pub jti: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not a ticket of this instance (bad shape or signature).
    #[error("the ticket is not valid")]
    Invalid,
    #[error("the ticket has expired")]
    Expired,
}

impl TicketError {
    /// The signaling error code (wire contract A.8).
    pub fn code(self) -> &'static str {
        match self {
            TicketError::Invalid => "rtc_join_denied",
            TicketError::Expired => "rtc_ticket_expired",
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length")
}

/// Signs `claims`.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    let body = URL_SAFE_NO_PAD.encode(simd_json::to_vec(claims).expect("claims serialize"));
    let mut m = mac(secret);
    m.update(body.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{body}.{signature}")
}

/// Checks the signature and expiry of `ticket` at `now` (Unix seconds) and returns its claims.
pub fn verify(secret: &[u8], ticket: &str, now: i64) -> Result<Claims, TicketError> {
    if ticket.len() > MAX_TICKET_CHARS {
        return Err(TicketError::Invalid);
    }
    let (body, signature) = ticket.split_once('.').ok_or(TicketError::Invalid)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TicketError::Invalid)?;
    let mut m = mac(secret);
    m.update(body.as_bytes());
    m.verify_slice(&signature)
        .map_err(|_| TicketError::Invalid)?;
    let mut json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TicketError::Invalid)?;
    let claims: Claims = crate::json::from_slice(&mut json).map_err(|_| TicketError::Invalid)?;
    if claims.exp <= now {
        return Err(TicketError::Expired);
    }
    Ok(claims)
}

/// A fresh random secret (when `OPENCHAT_RTC_TICKET_SECRET` is unset).
pub fn random_secret() -> Vec<u8> {
    use rand::RngCore;
    let mut secret = vec![0u8; MIN_SECRET_BYTES];
    rand::thread_rng().fill_bytes(&mut secret);
    secret
}

/// A fresh ticket id.
pub fn new_jti() -> String {
    format!("jt_{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            server_id: "srv".into(),
            channel_id: "ch_voice".into(),
            user_uid: "uid_a".into(),
            device_id: "desktop_1".into(),
            permissions: Permissions::ALL,
            exp,
            jti: "jt_1".into(),
        }
    }

    #[test]
    fn a_signed_ticket_verifies_until_it_expires() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let ticket = sign(secret, &claims(1_000));
        assert_eq!(verify(secret, &ticket, 999), Ok(claims(1_000)));
        assert_eq!(verify(secret, &ticket, 1_000), Err(TicketError::Expired));
        assert_eq!(TicketError::Expired.code(), "rtc_ticket_expired");
    }

    #[test]
    fn tampering_or_another_secret_is_refused() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let ticket = sign(secret, &claims(1_000));
        assert_eq!(
            verify(b"another secret, also 32 bytes!!!", &ticket, 0),
            Err(TicketError::Invalid)
        );
        // Changing the claims (a different channel) breaks the signature.
        let (_, signature) = ticket.split_once('.').unwrap();
        let mut other = claims(1_000);
        other.channel_id = "ch_other".into();
        let forged_body = sign(b"attacker", &other);
        let forged = format!("{}.{signature}", forged_body.split_once('.').unwrap().0);
        assert_eq!(verify(secret, &forged, 0), Err(TicketError::Invalid));
        for garbage in ["", ".", "abc", "a.b", &"x".repeat(5000)] {
            assert_eq!(
                verify(secret, garbage, 0),
                Err(TicketError::Invalid),
                "{garbage:.20}"
            );
        }
    }

    #[test]
    fn claims_carry_flat_permissions() {
        let json = String::from_utf8(simd_json::to_vec(&claims(5)).unwrap()).unwrap();
        assert!(
            json.contains("\"speak\":true") && json.contains("\"jti\":\"jt_1\""),
            "{json}"
        );
    }
}
