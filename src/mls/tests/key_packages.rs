//! KeyPackage uploads: accepted packages and every refusal.

use super::*;
use openmls::prelude::{Capabilities, ExtensionType, Lifetime};

#[test]
fn key_package_accepted_with_openmls_ref() {
    let dev = Dev::new("dev-1");
    let (data, kp) = dev.kp();
    let valid = validate_key_package(&data, "dev-1", &dev.key(), now()).expect("valid");
    let expected = kp.hash_ref(dev.provider.crypto()).expect("ref");
    assert_eq!(valid.key_package_ref, expected.as_slice());
    assert_eq!(valid.not_after, kp.life_time().not_after());
    assert!(!valid.has_last_resort_extension);
    assert!(valid.not_after - valid.not_before <= MAX_KEY_PACKAGE_LIFETIME_SECS);
}

#[test]
fn last_resort_package_flagged() {
    let dev = Dev::new("dev-1");
    let builder = KeyPackage::builder()
        .mark_as_last_resort()
        .leaf_node_capabilities(
            Capabilities::builder()
                .extensions(vec![ExtensionType::LastResort])
                .build(),
        );
    let (data, _) = dev.kp_with(builder, CIPHERSUITE);
    let valid = validate_key_package(&data, "dev-1", &dev.key(), now()).expect("valid");
    assert!(valid.has_last_resort_extension);
    // Without the capability openmls itself refuses the package.
    let (bad, _) = dev.kp_with(KeyPackage::builder().mark_as_last_resort(), CIPHERSUITE);
    assert_eq!(
        validate_key_package(&bad, "dev-1", &dev.key(), now()),
        Err(MlsError::InvalidKeyPackage)
    );
}

#[test]
fn key_package_refusals() {
    let dev = Dev::new("dev-1");
    let (data, _) = dev.kp();
    let t = now();

    // Foreign signature key: credential names dev-1, signed by another key.
    let other = Dev::new("dev-1");
    let (foreign, _) = other.kp();
    assert_eq!(
        validate_key_package(&foreign, "dev-1", &dev.key(), t),
        Err(MlsError::SignatureKeyMismatch)
    );
    // Wrong identity.
    assert_eq!(
        validate_key_package(&data, "dev-2", &dev.key(), t),
        Err(MlsError::CredentialMismatch)
    );
    // Over-long lifetime.
    let (long, _) = dev.kp_with(
        KeyPackage::builder().key_package_lifetime(Lifetime::new(MAX_KEY_PACKAGE_LIFETIME_SECS)),
        CIPHERSUITE,
    );
    assert_eq!(
        validate_key_package(&long, "dev-1", &dev.key(), t),
        Err(MlsError::LifetimeTooLong)
    );
    // Just inside the limit (range = secs + 1h margin).
    let (ok, _) = dev.kp_with(
        KeyPackage::builder()
            .key_package_lifetime(Lifetime::new(MAX_KEY_PACKAGE_LIFETIME_SECS - 3600)),
        CIPHERSUITE,
    );
    assert!(validate_key_package(&ok, "dev-1", &dev.key(), t).is_ok());
    // Judged by the caller's clock.
    assert_eq!(
        validate_key_package(&data, "dev-1", &dev.key(), t + 90 * 86400),
        Err(MlsError::Expired)
    );
    assert_eq!(
        validate_key_package(&data, "dev-1", &dev.key(), t - 2 * 3600),
        Err(MlsError::NotYetValid)
    );
    // Garbage, truncated, too large, trailing bytes.
    assert_eq!(
        validate_key_package(b"hello world", "dev-1", &dev.key(), t),
        Err(MlsError::WrongProtocolVersion)
    );
    assert_eq!(
        validate_key_package(&[], "dev-1", &dev.key(), t),
        Err(MlsError::Malformed)
    );
    for cut in [1, 3, 5, 8, 20, data.len() / 2, data.len() - 1] {
        let r = validate_key_package(&data[..cut], "dev-1", &dev.key(), t);
        assert!(r.is_err(), "truncated at {cut}");
    }
    let mut trailing = data.clone();
    trailing.push(0);
    assert_eq!(
        validate_key_package(&trailing, "dev-1", &dev.key(), t),
        Err(MlsError::Malformed)
    );
    let big = vec![0u8; MAX_KEY_PACKAGE_BYTES + 1];
    assert!(matches!(
        validate_key_package(&big, "dev-1", &dev.key(), t),
        Err(MlsError::TooLarge { .. })
    ));
    // A bare KeyPackage (not wrapped in an MLSMessage).
    let (_, kp) = dev.kp();
    let bare = kp.tls_serialize_detached().expect("serialize");
    assert!(validate_key_package(&bare, "dev-1", &dev.key(), t).is_err());
    // A flipped signature byte.
    let mut bad_sig = data.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    assert_eq!(
        validate_key_package(&bad_sig, "dev-1", &dev.key(), t),
        Err(MlsError::InvalidKeyPackage)
    );
    // Another ciphersuite.
    let p256 = Dev::with_scheme("dev-1", SignatureScheme::ECDSA_SECP256R1_SHA256);
    let (other_cs, _) = p256.kp_with(
        KeyPackage::builder(),
        Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
    );
    assert_eq!(
        validate_key_package(&other_cs, "dev-1", &dev.key(), t),
        Err(MlsError::WrongCiphersuite)
    );
    // Not a key package (a group info).
    let (_, gi) = create(&dev, "c");
    assert_eq!(
        validate_key_package(&gi, "dev-1", &dev.key(), t),
        Err(MlsError::NotAKeyPackage)
    );
}
