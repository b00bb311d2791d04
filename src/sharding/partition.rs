//! Which partition a key belongs to. The hash is part of the store's contract with every client
//! (a client routes for itself), so it is a published algorithm with a fixed seed, never a hasher
//! whose output may change between versions: **XXH3-64 of the key's bytes, seeded with
//! [`KEY_HASH_SEED`], modulo the number of partitions.**

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A partition's number, `0..partitions`.
pub type PartitionId = u32;

/// Partitions per system unless the directory was created with another number; fixed for the
/// life of the system. A prime, so that keys with regular hashes still spread.
pub const PARTITIONS_DEFAULT: u32 = 271;

/// The seed of the key hash ("RAVEL" and a version): changing it would move every key.
pub const KEY_HASH_SEED: u64 = 0x5241_5645_4c00_0001;

/// The partition of `key` among `partitions`.
pub fn partition_of(key: &[u8], partitions: u32) -> PartitionId {
    assert!(partitions > 0, "a system has at least one partition");
    (xxh3_64_with_seed(key, KEY_HASH_SEED) % u64::from(partitions)) as PartitionId
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values from an independent implementation (Python's `xxhash`, a binding of the
    /// reference C library): `xxhash.xxh3_64_intdigest(key, seed=0x52415645_4c000001) % 271`.
    /// If this fails, keys would move between partitions: every client and stored table breaks.
    #[test]
    fn the_key_hash_matches_the_reference_implementation() {
        let golden: [(&[u8], u64, u32); 4] = [
            (b"", 0x934a_6985_d2ba_469e, 27),
            (b"a", 0x9e30_ff03_90ff_be35, 32),
            (b"hello", 0x104a_c4c5_d961_da06, 33),
            (b"user:42", 0x755e_93e0_2c59_4bbf, 180),
        ];
        for (key, hash, partition) in golden {
            assert_eq!(xxh3_64_with_seed(key, KEY_HASH_SEED), hash, "{key:?}");
            assert_eq!(partition_of(key, PARTITIONS_DEFAULT), partition, "{key:?}");
        }
        let long: Vec<u8> = (0..200).collect();
        assert_eq!(
            xxh3_64_with_seed(&long, KEY_HASH_SEED),
            0x077c_7294_cc98_4625
        );
        assert_eq!(partition_of(&long, PARTITIONS_DEFAULT), 80);
    }

    #[test]
    fn keys_spread_over_every_partition() {
        let mut counts = vec![0u32; PARTITIONS_DEFAULT as usize];
        for n in 0..271_000u32 {
            counts[partition_of(format!("key-{n}").as_bytes(), PARTITIONS_DEFAULT) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // 1000 keys per partition on average; a fair hash stays within a few standard deviations.
        assert!(*min > 850 && *max < 1150, "min {min}, max {max}");
    }
}
