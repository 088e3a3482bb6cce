//! Ephemeral TURN credentials in coturn's shared-secret scheme (`use-auth-secret` /
//! `static-auth-secret`, also known as the TURN REST API): the username is
//! `<expiry unix seconds>:<user>`, the password is base64(HMAC-SHA1(secret, username)). coturn
//! checks both without talking to us.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// How long an ephemeral TURN credential is valid: long enough for a call to outlive it.
pub const TURN_CREDENTIAL_TTL_SECS: i64 = 12 * 3600;

/// `(username, credential)` for `user` valid until `expires_at` (Unix seconds).
pub fn credentials(secret: &[u8], user: &str, expires_at: i64) -> (String, String) {
    let username = format!("{expires_at}:{user}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(username.as_bytes());
    let credential = STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_coturn_scheme() {
        // HMAC-SHA1("secret", "1700000000:uid_a"), base64 — computed independently with
        // `printf '1700000000:uid_a' | openssl dgst -sha1 -hmac secret -binary | base64`.
        let (username, credential) = credentials(b"secret", "uid_a", 1_700_000_000);
        assert_eq!(username, "1700000000:uid_a");
        assert_eq!(credential, EXPECTED);
    }

    const EXPECTED: &str = "kUQEq+3gROBhX4t/rXrY1alYDUU=";
}
