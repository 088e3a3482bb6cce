//! Handshake checks: the creator's genesis GroupInfo ([`check_genesis`]) and
//! commit bundles ([`check_commit`]), replayed on the DS's public view of the
//! group.

use openmls::ciphersuite::signable::Verifiable;
use openmls::prelude::OpenMlsProvider;
use openmls::prelude::{
    ContentType, MlsMessageBodyIn, ProcessedMessageContent, ProtocolMessage, PublicGroup,
    PublicProcessMessageError, Sender, ValidationError,
};
use openmls_rust_crypto::OpenMlsRustCrypto;

use super::framing::parse_message;
use super::group_info::{
    decode_group_info, group_fingerprint, group_from_group_info, group_info_fingerprint,
};
use super::key_package::check_lifetime;
use super::state::{export_public_state, load_state};
use super::{
    AcceptedCommit, CIPHERSUITE, GroupState, Leaf, MAX_HANDSHAKE_BYTES, MlsError, StateSource,
    basic_identity, check_size, guarded,
};

/// Lists the leaves of a public group; every credential must be Basic.
fn leaves_of(group: &PublicGroup) -> Result<Vec<Leaf>, MlsError> {
    group
        .members()
        .map(|m| {
            Ok(Leaf {
                index: m.index.u32(),
                identity: basic_identity(&m.credential)?,
                signature_key: m.signature_key,
            })
        })
        .collect()
}

/// Validates the creator's epoch-0 GroupInfo for a new group on its own and
/// returns the state to keep (with its `public_state`) plus its single leaf.
///
/// `genesis` must be a TLS-encoded MLSMessage GroupInfo with the ratchet_tree
/// extension, of group `group_id`, epoch 0, our ciphersuite, exactly one leaf
/// with a Basic credential, and verify under openmls (`PublicGroup::from_external`:
/// signature by that leaf, tree hash, leaf node signatures and lifetimes).
/// The caller should compare the leaf with the creating device.
pub fn check_genesis(group_id: &[u8], genesis: &[u8]) -> Result<(GroupState, Leaf), MlsError> {
    guarded(|| {
        let (provider, _group, leaf) = check_genesis_inner(group_id, genesis)?;
        let state = GroupState {
            epoch: 0,
            group_info: genesis.to_vec(),
            public_state: export_public_state(provider.storage())?,
        };
        Ok((state, leaf))
    })
}

/// [`check_genesis`]'s checks; returns the verified group, whose provider's
/// storage holds exactly that group.
fn check_genesis_inner(
    group_id: &[u8],
    genesis: &[u8],
) -> Result<(OpenMlsRustCrypto, PublicGroup, Leaf), MlsError> {
    let to_genesis = |e| match e {
        MlsError::InvalidGroupInfo => MlsError::InvalidGenesis,
        other => other,
    };
    let (verifiable, summary) = decode_group_info(genesis).map_err(to_genesis)?;
    if summary.group_id != group_id {
        return Err(MlsError::WrongGroup);
    }
    if summary.epoch != 0 {
        return Err(MlsError::InvalidGenesis);
    }
    let provider = OpenMlsRustCrypto::default();
    let group = group_from_group_info(&provider, verifiable).map_err(to_genesis)?;
    if group.group_context().epoch().as_u64() != 0 || group.group_id().as_slice() != group_id {
        return Err(MlsError::InvalidGenesis);
    }
    let mut leaves = leaves_of(&group)?;
    if leaves.len() != 1 {
        return Err(MlsError::InvalidGenesis);
    }
    let leaf = leaves.pop().ok_or(MlsError::InvalidGenesis)?;
    Ok((provider, group, leaf))
}

/// Checks a commit bundle against the kept state.
///
/// `current` is `None` only for a group without state (epoch 0); then
/// `genesis` must be the creator's epoch-0 GroupInfo (see [`check_genesis`]).
/// With `current` given, a `genesis` is refused ([`MlsError::UnexpectedGenesis`]).
///
/// Checks, in order:
/// * sizes (each ≤ [`MAX_HANDSHAKE_BYTES`]);
/// * `commit` is an MLSMessage PublicMessage (a PrivateMessage gives
///   [`MlsError::NotPublicMessage`]) with content type commit
///   ([`MlsError::NotACommit`]), of `group_id` ([`MlsError::WrongGroup`]), for
///   the current epoch ([`MlsError::WrongEpoch`]), sent by a member
///   ([`MlsError::SenderNotMember`]);
/// * the commit is replayed with openmls on the kept `PublicGroup`: restored
///   from `current.public_state` when that loads and matches
///   `current.group_info` exactly, else (or for a genesis) built from the
///   GroupInfo and its ratchet tree with `from_external` (see the module
///   documentation; [`AcceptedCommit::loaded_from`] tells which). The replay
///   checks the signature against the sender's leaf, confirmation-tag
///   presence, proposal validity (including the added KeyPackages), update
///   path and parent hashes. The membership tag must be present but cannot be
///   verified (the DS has no membership key);
/// * every added KeyPackage's lifetime is valid at `now_secs` and not too long
///   (leaves already in the tree are not judged by their lifetime again);
/// * the merged result must equal the bundle's `group_info`: that GroupInfo
///   must be of epoch current+1, have the same TLS-encoded GroupContext, the
///   same confirmation tag and the same ratchet_tree extension as the merged
///   group (the tree it exports), and be signed by the leaf it names as signer
///   in the merged tree;
/// * every leaf after the commit has a Basic credential;
/// * a welcome is required exactly when the commit adds members; it must be an
///   MLSMessage Welcome in our ciphersuite whose recipients are exactly the
///   added KeyPackages.
///
/// A commit refused against the restored `public_state` is checked once more
/// against the GroupInfo alone, and accepted if that accepts it (so a
/// `public_state` can only ever add acceptances, never refusals, compared with
/// the GroupInfo); the first error is returned otherwise.
///
/// It does NOT check who the members should be: the caller compares
/// `members`/`removed`/`committer` with its authoritative membership.
pub fn check_commit(
    group_id: &[u8],
    current: Option<&GroupState>,
    genesis: Option<&[u8]>,
    commit: &[u8],
    welcome: Option<&[u8]>,
    group_info: &[u8],
    now_secs: u64,
) -> Result<AcceptedCommit, MlsError> {
    let input = CommitInput {
        group_id,
        current,
        genesis,
        commit,
        welcome,
        group_info,
        now_secs,
    };
    let mut loaded_from = None;
    let first = guarded(|| check_commit_inner(&input, true, &mut loaded_from));
    match first {
        // Refused against the restored public_state: the kept GroupInfo gets
        // a second chance, so that a public_state that restored and matched
        // the GroupInfo but is wrong in a part the match cannot see (openmls
        // keeps the interim transcript hash private) never refuses a commit
        // the GroupInfo accepts. Costs one GroupInfo load per such refusal,
        // what every commit cost before public_state.
        Err(error)
            if loaded_from == Some(StateSource::PublicState)
                && !matches!(error, MlsError::TooLarge { .. }) =>
        {
            let mut again = None;
            guarded(|| check_commit_inner(&input, false, &mut again)).or(Err(error))
        }
        other => other,
    }
}

/// The arguments of [`check_commit`].
struct CommitInput<'a> {
    group_id: &'a [u8],
    current: Option<&'a GroupState>,
    genesis: Option<&'a [u8]>,
    commit: &'a [u8],
    welcome: Option<&'a [u8]>,
    group_info: &'a [u8],
    now_secs: u64,
}

/// One attempt of [`check_commit`]; `use_public_state` false skips
/// `public_state`. Sets `loaded_from` once the kept state is loaded.
fn check_commit_inner(
    input: &CommitInput<'_>,
    use_public_state: bool,
    loaded_from_out: &mut Option<StateSource>,
) -> Result<AcceptedCommit, MlsError> {
    let &CommitInput {
        group_id,
        current,
        genesis,
        commit,
        welcome,
        group_info,
        now_secs,
    } = input;
    check_size(commit, MAX_HANDSHAKE_BYTES)?;
    check_size(group_info, MAX_HANDSHAKE_BYTES)?;
    if let Some(w) = welcome {
        check_size(w, MAX_HANDSHAKE_BYTES)?;
    }

    // The epoch the commit must be for.
    let current_epoch = match (current, genesis) {
        (Some(_), Some(_)) => return Err(MlsError::UnexpectedGenesis),
        (Some(state), None) => state.epoch,
        (None, Some(_)) => 0,
        (None, None) => return Err(MlsError::MissingGenesis),
    };

    // Framing checks, before any expensive work.
    let protocol_message: ProtocolMessage = match parse_message(commit)?.extract() {
        MlsMessageBodyIn::PublicMessage(pm) => ProtocolMessage::from(pm),
        MlsMessageBodyIn::PrivateMessage(_) => return Err(MlsError::NotPublicMessage),
        _ => return Err(MlsError::NotACommit),
    };
    if protocol_message.content_type() != ContentType::Commit {
        return Err(MlsError::NotACommit);
    }
    if protocol_message.group_id().as_slice() != group_id {
        return Err(MlsError::WrongGroup);
    }
    let message_epoch = protocol_message.epoch().as_u64();
    if message_epoch != current_epoch {
        return Err(MlsError::WrongEpoch {
            message_epoch,
            current_epoch,
        });
    }
    if let ProtocolMessage::PublicMessage(pm) = &protocol_message
        && !matches!(pm.sender(), Sender::Member(_))
    {
        return Err(MlsError::SenderNotMember);
    }

    // Cheap decoding of the other two blobs before any signature work, so
    // junk is refused without loading the group.
    let (new_group_info, new_summary) = decode_group_info(group_info)?;
    if new_summary.group_id != group_id || new_summary.epoch != current_epoch.saturating_add(1) {
        return Err(MlsError::GroupInfoMismatch);
    }
    let welcome_refs_given = match welcome {
        Some(w) => Some(welcome_refs_of(w)?),
        None => None,
    };

    // The state the commit applies to (the genesis is verified only now).
    let (provider, mut group, loaded_from) = match (current, genesis) {
        (Some(state), _) => load_state(group_id, state, use_public_state)?,
        (None, Some(genesis)) => {
            let (provider, group, _) = check_genesis_inner(group_id, genesis)?;
            (provider, group, StateSource::Genesis)
        }
        (None, None) => return Err(MlsError::MissingGenesis),
    };
    *loaded_from_out = Some(loaded_from);
    if group.group_context().epoch().as_u64() != current_epoch
        || group.group_id().as_slice() != group_id
    {
        return Err(MlsError::InvalidState);
    }
    let old_members = leaves_of(&group).map_err(|_| MlsError::InvalidState)?;

    // Replay the commit.
    let processed = group
        .process_message(provider.crypto(), protocol_message)
        .map_err(|e| match e {
            PublicProcessMessageError::ValidationError(ValidationError::UnknownMember) => {
                MlsError::SenderNotMember
            }
            other => MlsError::InvalidCommit(other.to_string()),
        })?;
    let committer = basic_identity(processed.credential())?;
    let staged = match processed.into_content() {
        ProcessedMessageContent::StagedCommitMessage(staged) => staged,
        _ => return Err(MlsError::NotACommit),
    };

    let mut added_refs: Vec<Vec<u8>> = Vec::new();
    for add in staged.add_proposals() {
        let kp = add.add_proposal().key_package();
        check_lifetime(kp, now_secs)?;
        basic_identity(kp.leaf_node().credential())?;
        let r = kp
            .hash_ref(provider.crypto())
            .map_err(|e| MlsError::InvalidCommit(e.to_string()))?;
        added_refs.push(r.as_slice().to_vec());
    }
    let removed_indices: Vec<u32> = staged
        .remove_proposals()
        .map(|r| r.remove_proposal().removed().u32())
        .collect();
    let removed: Vec<Vec<u8>> = old_members
        .iter()
        .filter(|leaf| removed_indices.contains(&leaf.index))
        .map(|leaf| leaf.identity.clone())
        .collect();

    // Merge into an emptied storage, so that afterwards it holds exactly what
    // openmls writes for the merged group: the new public_state.
    provider
        .storage()
        .values
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
    group
        .merge_commit(provider.storage(), *staged)
        .map_err(|e| MlsError::InvalidCommit(e.to_string()))?;
    let merged = &group;
    let new_epoch = merged.group_context().epoch().as_u64();
    let members = leaves_of(merged)?;

    // The bundle's GroupInfo must be exactly this result, signed by a member
    // of the merged tree. No from_external here: it would judge the lifetimes
    // of leaves that were validated when they were added.
    if new_epoch != new_summary.epoch {
        return Err(MlsError::GroupInfoMismatch);
    }
    let (given, signer) = group_info_fingerprint(&new_group_info)?;
    if given != group_fingerprint(merged)? {
        return Err(MlsError::GroupInfoMismatch);
    }
    let signer_key = merged
        .leaf(signer)
        .ok_or(MlsError::InvalidGroupInfo)?
        .signature_key()
        .clone()
        .into_signature_public_key_enriched(CIPHERSUITE.signature_algorithm());
    new_group_info
        .verify(provider.crypto(), &signer_key)
        .map_err(|_| MlsError::InvalidGroupInfo)?;

    // Welcome.
    let welcome_refs = match (welcome_refs_given, added_refs.is_empty()) {
        (None, true) => Vec::new(),
        (None, false) => return Err(MlsError::MissingWelcome),
        (Some(_), true) => return Err(MlsError::UnexpectedWelcome),
        (Some(refs), false) => {
            let mut a = added_refs.clone();
            let mut b = refs.clone();
            a.sort();
            b.sort();
            if a != b {
                return Err(MlsError::WelcomeMismatch);
            }
            refs
        }
    };

    Ok(AcceptedCommit {
        new_epoch,
        committer,
        members,
        removed,
        welcome_refs,
        state: GroupState {
            epoch: new_epoch,
            group_info: group_info.to_vec(),
            public_state: export_public_state(provider.storage())?,
        },
        loaded_from,
    })
}

/// Decodes a Welcome MLSMessage and returns its recipients' KeyPackageRefs.
fn welcome_refs_of(data: &[u8]) -> Result<Vec<Vec<u8>>, MlsError> {
    let message = parse_message(data).map_err(|e| match e {
        MlsError::Malformed => MlsError::InvalidWelcome,
        other => other,
    })?;
    let welcome = match message.extract() {
        MlsMessageBodyIn::Welcome(w) => w,
        _ => return Err(MlsError::InvalidWelcome),
    };
    if welcome.ciphersuite() != CIPHERSUITE {
        return Err(MlsError::WrongCiphersuite);
    }
    Ok(welcome
        .secrets()
        .iter()
        .map(|s| s.new_member().as_slice().to_vec())
        .collect())
}
