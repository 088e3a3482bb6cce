//! GroupInfo handling: decoding without verification, building a verified
//! `PublicGroup` from a GroupInfo (`from_external`), and the fingerprints
//! that compare a GroupInfo with the group it describes.

use openmls::ciphersuite::signable::Verifiable;
use openmls::messages::ConfirmationTag;
use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::OpenMlsProvider;
use openmls::prelude::{
    LeafNodeIndex, MlsMessageBodyIn, ProposalStore, PublicGroup,
    tls_codec::{DeserializeBytes, Serialize as TlsSerializeTrait},
};
use openmls_rust_crypto::OpenMlsRustCrypto;

use super::framing::parse_message;
use super::{CIPHERSUITE, MAX_HANDSHAKE_BYTES, MlsError, check_size};

/// Builds a verified `PublicGroup` from a decoded GroupInfo and its
/// ratchet_tree extension with openmls' `from_external` (signature, tree
/// hash, parent hashes, leaf signatures, and leaf lifetimes by the system
/// clock). openmls also writes the group into `provider`'s storage.
pub(super) fn group_from_group_info(
    provider: &OpenMlsRustCrypto,
    verifiable: VerifiableGroupInfo,
) -> Result<PublicGroup, MlsError> {
    let tree = verifiable
        .extensions()
        .ratchet_tree()
        .ok_or(MlsError::InvalidGroupInfo)?
        .ratchet_tree()
        .clone();
    PublicGroup::from_external(
        provider.crypto(),
        provider.storage(),
        tree,
        verifiable,
        ProposalStore::new(),
    )
    .map(|(group, _group_info)| group)
    .map_err(|_| MlsError::InvalidGroupInfo)
}

/// What a GroupInfo says about its group, TLS-encoded: it must be equal for a
/// GroupInfo and the group it describes.
#[derive(PartialEq, Eq)]
pub(super) struct Fingerprint {
    group_context: Vec<u8>,
    confirmation_tag: Vec<u8>,
    ratchet_tree: Vec<u8>,
}

/// The fingerprint of a group the DS holds.
pub(super) fn group_fingerprint(group: &PublicGroup) -> Result<Fingerprint, MlsError> {
    let encode_err = |_| MlsError::Internal;
    Ok(Fingerprint {
        group_context: group
            .group_context()
            .tls_serialize_detached()
            .map_err(encode_err)?,
        confirmation_tag: group
            .confirmation_tag()
            .tls_serialize_detached()
            .map_err(encode_err)?,
        ratchet_tree: group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .map_err(encode_err)?,
    })
}

/// The (unverified) fingerprint and signer of a GroupInfo.
///
/// openmls 0.9 keeps `VerifiableGroupInfo::signer` and the confirmation tag
/// accessor `pub(crate)`, so both are read from the TLS encoding of the
/// GroupInfo (RFC 9420 §12.4.3: group_context, extensions, confirmation_tag,
/// signer, signature). The parse is then checked by rebuilding the GroupInfo
/// from the parts with the public `VerifiableGroupInfo::new` and comparing.
pub(super) fn group_info_fingerprint(
    verifiable: &VerifiableGroupInfo,
) -> Result<(Fingerprint, LeafNodeIndex), MlsError> {
    let bad = |_| MlsError::InvalidGroupInfo;
    let whole = verifiable.tls_serialize_detached().map_err(bad)?;
    let group_context = verifiable
        .group_context()
        .tls_serialize_detached()
        .map_err(bad)?;
    let extensions = verifiable
        .extensions()
        .tls_serialize_detached()
        .map_err(bad)?;
    let rest = whole
        .strip_prefix(group_context.as_slice())
        .and_then(|rest| rest.strip_prefix(extensions.as_slice()))
        .ok_or(MlsError::InvalidGroupInfo)?;
    let (tag, rest) = ConfirmationTag::tls_deserialize_bytes(rest).map_err(bad)?;
    let (signer, _signature) = u32::tls_deserialize_bytes(rest).map_err(bad)?;
    let signer = LeafNodeIndex::new(signer);
    let rebuilt = VerifiableGroupInfo::new(
        verifiable.group_context().clone(),
        verifiable.extensions().clone(),
        tag.clone(),
        signer,
        Verifiable::signature(verifiable).clone(),
    );
    if rebuilt != *verifiable {
        return Err(MlsError::InvalidGroupInfo);
    }
    let ratchet_tree = verifiable
        .extensions()
        .ratchet_tree()
        .ok_or(MlsError::InvalidGroupInfo)?
        .ratchet_tree()
        .tls_serialize_detached()
        .map_err(bad)?;
    Ok((
        Fingerprint {
            group_context,
            confirmation_tag: tag.tls_serialize_detached().map_err(bad)?,
            ratchet_tree,
        },
        signer,
    ))
}

/// Decodes a GroupInfo MLSMessage without verifying it: size, encoding,
/// ciphersuite and presence of the ratchet_tree extension.
pub(super) fn decode_group_info(
    data: &[u8],
) -> Result<(VerifiableGroupInfo, VerifiableGroupInfoSummary), MlsError> {
    check_size(data, MAX_HANDSHAKE_BYTES)?;
    let message = parse_message(data).map_err(|e| match e {
        MlsError::Malformed => MlsError::InvalidGroupInfo,
        other => other,
    })?;
    let verifiable: VerifiableGroupInfo = match message.extract() {
        MlsMessageBodyIn::GroupInfo(gi) => gi,
        _ => return Err(MlsError::InvalidGroupInfo),
    };
    if verifiable.ciphersuite() != CIPHERSUITE {
        return Err(MlsError::WrongCiphersuite);
    }
    if verifiable.extensions().ratchet_tree().is_none() {
        return Err(MlsError::InvalidGroupInfo);
    }
    let summary = VerifiableGroupInfoSummary {
        group_id: verifiable.group_id().as_slice().to_vec(),
        epoch: verifiable.epoch().as_u64(),
    };
    Ok((verifiable, summary))
}

/// The unverified header fields of a GroupInfo, read before verification.
pub(super) struct VerifiableGroupInfoSummary {
    pub(super) group_id: Vec<u8>,
    pub(super) epoch: u64,
}
