//! Where the domain's ids and secret tokens come from: an [`Entropy`] the caller hands to the
//! [`Community`](super::community::Community) when it builds one, so the domain itself never
//! asks the operating system for randomness. The authority seeds it from the OS
//! (`crate::auth::os_seed`), which keeps ids and tokens as unguessable as fresh OS randomness;
//! tests seed it with a fixed value, so the ids a test sees are always the same.
//!
//! The generator is `rand`'s `StdRng` (ChaCha, a cryptographically secure generator): from a
//! secret 256-bit seed its output cannot be predicted. Ids keep their format (`{prefix}_` and
//! a version-4 UUID in simple form) and tokens theirs (`crate::auth::token_from_bytes`).

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub struct Entropy {
    rng: StdRng,
}

impl Entropy {
    /// A generator that draws everything from `seed`: pass a secret seed from the OS in
    /// production, a fixed one in tests.
    pub fn from_seed(seed: [u8; 32]) -> Entropy {
        Entropy {
            rng: StdRng::from_seed(seed),
        }
    }

    /// A fresh entity id: `{prefix}_` and 122 random bits as a version-4 UUID (32 hex digits).
    pub fn id(&mut self, prefix: &str) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
        format!("{prefix}_{}", uuid.simple())
    }

    /// `N` fresh random bytes.
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut bytes = [0u8; N];
        self.rng.fill_bytes(&mut bytes);
        bytes
    }

    /// A fresh bearer secret: `prefix` and 32 random bytes (`crate::auth::token_from_bytes`).
    pub fn token(&mut self, prefix: &str) -> String {
        let mut bytes = [0u8; crate::auth::RANDOM_BYTES];
        self.rng.fill_bytes(&mut bytes);
        crate::auth::token_from_bytes(prefix, bytes)
    }
}

impl std::fmt::Debug for Entropy {
    /// The state is secret: it would predict every id and token to come.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Entropy(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_format_and_a_seed_fixes_them() {
        let mut a = Entropy::from_seed([1; 32]);
        let id = a.id("ch");
        let uuid = id.strip_prefix("ch_").unwrap();
        assert_eq!(uuid.len(), 32);
        let parsed = uuid::Uuid::parse_str(uuid).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(Entropy::from_seed([1; 32]).id("ch"), id);
        assert_ne!(a.id("ch"), id, "each id is new");
        assert_ne!(Entropy::from_seed([2; 32]).id("ch"), id);
    }

    #[test]
    fn tokens_keep_their_format() {
        let mut e = Entropy::from_seed([3; 32]);
        let token = e.token("ocs_");
        assert!(token.starts_with("ocs_"));
        assert_eq!(token.len(), 4 + 43);
        assert_ne!(e.token("ocs_"), token);
    }
}
