//! Which shard owns what. Every piece of per-channel live state (presence, typing, subscriber
//! lists, voice rooms) belongs to exactly one shard, `shard_for(channel_id, shards)`. The function
//! is pure and stable across processes and machines (no per-process random seed), because a
//! cluster will use the same mapping to name the node and port that hosts a room.

/// Shard index in `0..shards` that owns `channel_id`. `shards` must be at least 1.
pub fn shard_for(channel_id: &str, shards: usize) -> usize {
    debug_assert!(shards > 0, "a process has at least one shard");
    if shards <= 1 {
        return 0;
    }
    (stable_hash(channel_id.as_bytes()) % shards as u64) as usize
}

/// FNV-1a over the bytes, then a SplitMix64 finalizer: FNV alone leaves the low bits of
/// similar short ids (`ch_1`, `ch_2`, …) correlated, and `% shards` reads exactly those bits.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a uniform random assignment stays within: 5.5 standard deviations of the binomial
    /// count, relative to the mean (about 1 in 10^7 per shard to exceed by chance).
    fn tolerance(ids: usize, shards: usize) -> f64 {
        let mean = ids as f64 / shards as f64;
        5.5 * ((1.0 - 1.0 / shards as f64) / mean).sqrt()
    }

    /// Largest relative deviation of any shard's load from the mean.
    fn worst_deviation(ids: &[String], shards: usize) -> f64 {
        let mut counts = vec![0usize; shards];
        for id in ids {
            counts[shard_for(id, shards)] += 1;
        }
        let mean = ids.len() as f64 / shards as f64;
        counts
            .iter()
            .map(|&c| (c as f64 - mean).abs() / mean)
            .fold(0.0, f64::max)
    }

    #[test]
    fn one_shard_owns_everything() {
        assert_eq!(shard_for("anything", 1), 0);
        assert_eq!(shard_for("", 1), 0);
    }

    #[test]
    fn mapping_is_stable_across_processes() {
        // Pinned values: changing the hash would move rooms between the nodes of a cluster that
        // run different versions, so a change here must be deliberate.
        assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(stable_hash(b"general"), 0xa8cd_6fba_d437_f159);
        assert_eq!(
            [
                shard_for("general", 4),
                shard_for("vc_general", 4),
                shard_for("ch_1", 4)
            ],
            [1, 0, 3]
        );
    }

    #[test]
    fn sequential_ids_spread_evenly() {
        for shards in [2, 3, 4, 8, 16] {
            let ids: Vec<String> = (0..20_000).map(|i| format!("ch_{i}")).collect();
            let dev = worst_deviation(&ids, shards);
            assert!(
                dev < tolerance(ids.len(), shards),
                "{shards} shards: worst deviation {dev:.3}"
            );
        }
    }

    #[test]
    fn uuid_ids_spread_evenly() {
        let ids: Vec<String> = (0..20_000)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        for shards in [2, 3, 5, 8] {
            let dev = worst_deviation(&ids, shards);
            assert!(
                dev < tolerance(ids.len(), shards),
                "{shards} shards: worst deviation {dev:.3}"
            );
        }
    }

    proptest! {
        #[test]
        fn always_in_range_and_deterministic(id in ".{0,64}", shards in 1usize..64) {
            let s = shard_for(&id, shards);
            prop_assert!(s < shards);
            prop_assert_eq!(s, shard_for(&id, shards));
        }

        /// Spread property: any family of 4,000 ids sharing a random prefix lands on every shard
        /// as evenly as a uniform random assignment would.
        #[test]
        fn prefixed_families_spread(prefix in "[a-z_]{0,12}", shards in 2usize..9) {
            let ids: Vec<String> = (0..4_000).map(|i| format!("{prefix}{i}")).collect();
            let dev = worst_deviation(&ids, shards);
            prop_assert!(dev < tolerance(ids.len(), shards), "prefix {:?}, {} shards: deviation {:.3}", prefix, shards, dev);
        }
    }
}
