//! KeyPackage uploads ([`validate_key_package`]) and the lifetime checks
//! shared with the KeyPackages a commit adds.

use openmls::prelude::OpenMlsProvider;
use openmls::prelude::{KeyPackage, KeyPackageVerifyError, MlsMessageBodyIn, ProtocolVersion};
use openmls::treesync::errors::LifetimeError;
use openmls_rust_crypto::OpenMlsRustCrypto;

use super::framing::{be16, parse_message};
use super::{
    CIPHERSUITE, MAX_KEY_PACKAGE_BYTES, MAX_KEY_PACKAGE_LIFETIME_SECS, MlsError, ValidKeyPackage,
    WIRE_FORMAT_KEY_PACKAGE, basic_identity, check_size, guarded,
};

/// Lifetime checks against `now_secs` shared by key package upload and adds.
///
/// Only call on a validated KeyPackage: openmls' `KeyPackage::life_time`
/// assumes the lifetime is present, which validation guarantees.
pub(super) fn check_lifetime(
    key_package: &KeyPackage,
    now_secs: u64,
) -> Result<(u64, u64), MlsError> {
    let lifetime = key_package.life_time();
    let (not_before, not_after) = (lifetime.not_before(), lifetime.not_after());
    if not_after < not_before || not_after - not_before > MAX_KEY_PACKAGE_LIFETIME_SECS {
        return Err(MlsError::LifetimeTooLong);
    }
    if not_before > now_secs {
        return Err(MlsError::NotYetValid);
    }
    if not_after <= now_secs {
        return Err(MlsError::Expired);
    }
    if not_after > now_secs.saturating_add(MAX_KEY_PACKAGE_LIFETIME_SECS) {
        return Err(MlsError::LifetimeTooLong);
    }
    Ok((not_before, not_after))
}

/// Validates an uploaded KeyPackage.
///
/// `data` must be a TLS-encoded MLSMessage with wire format `mls_key_package`
/// (RFC 9420 §6, what `MlsMessageOut::from(key_package)` serializes to); a bare
/// KeyPackage is refused (as [`MlsError::Malformed`] or [`MlsError::NotAKeyPackage`]).
///
/// Checks, in order: size (≤ [`MAX_KEY_PACKAGE_BYTES`]), protocol version of
/// the message and the package, that it is a KeyPackage, the ciphersuite,
/// openmls' validation (leaf node and package signatures, leaf node source,
/// init key ≠ encryption key, extensions listed in capabilities, lifetime
/// present and valid by the system clock), a Basic credential whose identity is
/// `device_id`, the leaf signature key equal to `identity_key`, and the
/// lifetime against `now_secs`: not_before ≤ now < not_after, range ≤
/// [`MAX_KEY_PACKAGE_LIFETIME_SECS`], and not_after ≤ now + that maximum.
pub fn validate_key_package(
    data: &[u8],
    device_id: &str,
    identity_key: &[u8; 32],
    now_secs: u64,
) -> Result<ValidKeyPackage, MlsError> {
    guarded(|| validate_key_package_inner(data, device_id, identity_key, now_secs))
}

fn validate_key_package_inner(
    data: &[u8],
    device_id: &str,
    identity_key: &[u8; 32],
    now_secs: u64,
) -> Result<ValidKeyPackage, MlsError> {
    check_size(data, MAX_KEY_PACKAGE_BYTES)?;
    // Peek the fixed header: MLSMessage version(2) wire_format(2), then the
    // KeyPackage's version(2) and cipher_suite(2). This lets us give precise
    // reasons (e.g. a ciphersuite openmls' provider does not even support).
    if be16(data, 2).is_some_and(|wf| wf != WIRE_FORMAT_KEY_PACKAGE) {
        // Still decode first so garbage reports Malformed, not NotAKeyPackage.
        parse_message(data)?;
        return Err(MlsError::NotAKeyPackage);
    }
    if be16(data, 0).is_some_and(|v| v != 1) || be16(data, 4).is_some_and(|v| v != 1) {
        return Err(MlsError::WrongProtocolVersion);
    }
    if be16(data, 6).is_some_and(|cs| cs != u16::from(CIPHERSUITE)) {
        return Err(MlsError::WrongCiphersuite);
    }
    let message = parse_message(data)?;
    let key_package_in = match message.extract() {
        MlsMessageBodyIn::KeyPackage(kp) => kp,
        _ => return Err(MlsError::NotAKeyPackage),
    };
    let provider = OpenMlsRustCrypto::default();
    let key_package: KeyPackage = key_package_in
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| match e {
            KeyPackageVerifyError::InvalidProtocolVersion => MlsError::WrongProtocolVersion,
            // openmls judges lifetimes by the system clock.
            KeyPackageVerifyError::LifetimeError(LifetimeError::NotValidYet { .. }) => {
                MlsError::NotYetValid
            }
            KeyPackageVerifyError::LifetimeError(_) => MlsError::Expired,
            _ => MlsError::InvalidKeyPackage,
        })?;
    if key_package.ciphersuite() != CIPHERSUITE {
        return Err(MlsError::WrongCiphersuite);
    }
    let leaf = key_package.leaf_node();
    let identity = basic_identity(leaf.credential())?;
    if identity != device_id.as_bytes() {
        return Err(MlsError::CredentialMismatch);
    }
    if leaf.signature_key().as_slice() != identity_key.as_slice() {
        return Err(MlsError::SignatureKeyMismatch);
    }
    let (not_before, not_after) = check_lifetime(&key_package, now_secs)?;
    let key_package_ref = key_package
        .hash_ref(provider.crypto())
        .map_err(|_| MlsError::InvalidKeyPackage)?
        .as_slice()
        .to_vec();
    Ok(ValidKeyPackage {
        key_package_ref,
        not_before,
        not_after,
        has_last_resort_extension: key_package.last_resort(),
    })
}
