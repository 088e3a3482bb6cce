//! The key that seals report evidence at rest (wire contract Part D): XChaCha20-Poly1305 with a
//! fresh random 24-byte nonce per text, the nonce stored before the ciphertext, base64url. The
//! key is `OPENCHAT_EVIDENCE_KEY` (64 hex characters) or, unset, a key file in the data
//! directory made at first start (`evidence.key`, mode 0600). Sealing and opening take the
//! nonce and the bytes from the caller; only [`EvidenceKey::from_file_or_create`] touches the
//! disk.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 24;
/// Name of the key file in the data directory.
pub const KEY_FILE: &str = "evidence.key";

/// A 256-bit key; `{:?}` never shows it.
#[derive(Clone)]
pub struct EvidenceKey([u8; 32]);

impl fmt::Debug for EvidenceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EvidenceKey(***)")
    }
}

impl EvidenceKey {
    /// 64 hex characters.
    pub fn from_hex(text: &str) -> Option<EvidenceKey> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(EvidenceKey(key))
    }

    /// The key in `dir/evidence.key`, made (with `fresh` bytes, owner-only) if there is none.
    pub fn from_file_or_create(dir: &Path, fresh: [u8; 32]) -> std::io::Result<EvidenceKey> {
        let path = dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => EvidenceKey::from_hex(&text).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not 64 hex characters", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut file = options.open(&path)?;
                let hex: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
                file.write_all(hex.as_bytes())?;
                file.sync_all()?;
                Ok(EvidenceKey(fresh))
            }
            Err(e) => Err(e),
        }
    }

    /// `plaintext` sealed under `nonce` (never reuse one: draw it fresh).
    pub fn seal(&self, nonce: [u8; NONCE_BYTES], plaintext: &str) -> String {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("XChaCha20-Poly1305 seals any length we accept");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The text `sealed` holds, if this key sealed it and nothing changed it.
    pub fn open(&self, sealed: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let plain = cipher.decrypt(XNonce::from_slice(nonce), ciphertext).ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_opens_with_its_key_only_and_shows_nothing_of_itself() {
        let key = EvidenceKey::from_hex(&"ab".repeat(32)).unwrap();
        let sealed = key.seal([7; NONCE_BYTES], "the message said something awful");
        assert!(!sealed.contains("awful"));
        assert_eq!(
            key.open(&sealed).as_deref(),
            Some("the message said something awful")
        );
        let other = EvidenceKey::from_hex(&"cd".repeat(32)).unwrap();
        assert_eq!(other.open(&sealed), None);
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(key.open(&String::from_utf8(tampered).unwrap()), None);
        assert_eq!(key.open("short"), None);
        assert_ne!(
            key.seal([8; NONCE_BYTES], "same"),
            key.seal([9; NONCE_BYTES], "same")
        );
        assert_eq!(format!("{key:?}"), "EvidenceKey(***)");
        for bad in ["", "zz", &"ab".repeat(31), &"g".repeat(64)] {
            assert!(EvidenceKey::from_hex(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_key_file_is_made_once_and_read_back() {
        let dir =
            std::env::temp_dir().join(format!("openchat-evidence-{:016x}", rand::random::<u64>()));
        let made = EvidenceKey::from_file_or_create(&dir, [3; 32]).unwrap();
        let again = EvidenceKey::from_file_or_create(&dir, [4; 32]).unwrap();
        assert_eq!(made.0, again.0, "the first key stays");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.join(KEY_FILE), "not a key").unwrap();
        assert!(EvidenceKey::from_file_or_create(&dir, [5; 32]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
