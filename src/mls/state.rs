//! The `public_state` of a [`GroupState`]: serializing the DS's validated
//! `PublicGroup` (its openmls storage entries), restoring it, and loading the
//! group a kept state describes (with the GroupInfo as fallback).

use std::panic::{AssertUnwindSafe, catch_unwind};

use openmls::prelude::{GroupId, OpenMlsProvider, PublicGroup};
use openmls_rust_crypto::{MemoryStorage, OpenMlsRustCrypto};

use super::group_info::{
    Fingerprint, decode_group_info, group_fingerprint, group_from_group_info,
    group_info_fingerprint,
};
use super::{
    CIPHERSUITE, GroupState, MAX_PUBLIC_STATE_BYTES, MlsError, PUBLIC_STATE_MAGIC, StateSource,
};

/// Serializes every entry of a storage: [`PUBLIC_STATE_MAGIC`], a u32 entry
/// count, then per entry (sorted by key) a u32 key length, the key, a u32 value
/// length and the value, integers big-endian.
pub(super) fn export_public_state(storage: &MemoryStorage) -> Result<Vec<u8>, MlsError> {
    let values = storage
        .values
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut entries: Vec<(&Vec<u8>, &Vec<u8>)> = values.iter().collect();
    entries.sort();
    let len32 = |n: usize| {
        u32::try_from(n)
            .map(u32::to_be_bytes)
            .map_err(|_| MlsError::Internal)
    };
    let size: usize = entries.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(PUBLIC_STATE_MAGIC.len() + 4 + size);
    out.extend_from_slice(PUBLIC_STATE_MAGIC);
    out.extend_from_slice(&len32(entries.len())?);
    for (key, value) in entries {
        out.extend_from_slice(&len32(key.len())?);
        out.extend_from_slice(key);
        out.extend_from_slice(&len32(value.len())?);
        out.extend_from_slice(value);
    }
    Ok(out)
}

/// Parses [`export_public_state`]'s format; `None` for anything else
/// (wrong magic, bad lengths, duplicate keys, trailing bytes).
pub(super) fn parse_public_state(
    data: &[u8],
) -> Option<std::collections::HashMap<Vec<u8>, Vec<u8>>> {
    /// At most this many entries (a `PublicGroup` writes four).
    const MAX_ENTRIES: usize = 64;
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = data.split_at_checked(n)?;
        *data = rest;
        Some(head)
    }
    fn take_u32(data: &mut &[u8]) -> Option<usize> {
        let bytes: [u8; 4] = take(data, 4)?.try_into().ok()?;
        usize::try_from(u32::from_be_bytes(bytes)).ok()
    }
    let mut data = data;
    if take(&mut data, PUBLIC_STATE_MAGIC.len())? != PUBLIC_STATE_MAGIC {
        return None;
    }
    let count = take_u32(&mut data)?;
    if count > MAX_ENTRIES {
        return None;
    }
    let mut entries = std::collections::HashMap::with_capacity(count);
    for _ in 0..count {
        let key_len = take_u32(&mut data)?;
        let key = take(&mut data, key_len)?.to_vec();
        let value_len = take_u32(&mut data)?;
        let value = take(&mut data, value_len)?.to_vec();
        if entries.insert(key, value).is_some() {
            return None;
        }
    }
    data.is_empty().then_some(entries)
}

/// Restores a `public_state` as a `PublicGroup` of `group_id` with
/// `PublicGroup::load` (which checks nothing, in particular no lifetimes: the
/// DS validated this group when it accepted the commit that produced it).
///
/// `None` unless it loads and describes exactly the kept GroupInfo
/// (`expected`): a state of another group, epoch or branch, a corrupted one or
/// one written by an openmls version with another storage format is not used.
/// openmls' storage panics on undecodable JSON; that is caught here too.
pub(super) fn restore_public_state(
    group_id: &[u8],
    data: &[u8],
    expected: &Fingerprint,
) -> Option<(OpenMlsRustCrypto, PublicGroup)> {
    if data.is_empty() || data.len() > MAX_PUBLIC_STATE_BYTES {
        return None;
    }
    let entries = parse_public_state(data)?;
    let restore = || -> Option<(OpenMlsRustCrypto, PublicGroup)> {
        let provider = OpenMlsRustCrypto::default();
        *provider.storage().values.write().ok()? = entries;
        let group =
            PublicGroup::load(provider.storage(), &GroupId::from_slice(group_id)).ok()??;
        if group.group_id().as_slice() != group_id
            || group.ciphersuite() != CIPHERSUITE
            || !group.queued_proposals(provider.storage()).ok()?.is_empty()
            || group_fingerprint(&group).ok()? != *expected
        {
            return None;
        }
        Some((provider, group))
    };
    catch_unwind(AssertUnwindSafe(restore)).ok().flatten()
}

/// The group a kept state describes, and how it was obtained: from
/// `public_state` when that is usable (and `use_public_state`), else from the
/// GroupInfo.
pub(super) fn load_state(
    group_id: &[u8],
    state: &GroupState,
    use_public_state: bool,
) -> Result<(OpenMlsRustCrypto, PublicGroup, StateSource), MlsError> {
    let (verifiable, summary) =
        decode_group_info(&state.group_info).map_err(|_| MlsError::InvalidState)?;
    if summary.group_id != group_id || summary.epoch != state.epoch {
        return Err(MlsError::InvalidState);
    }
    if use_public_state
        && !state.public_state.is_empty()
        && let Ok((expected, _)) = group_info_fingerprint(&verifiable)
        && let Some((provider, group)) =
            restore_public_state(group_id, &state.public_state, &expected)
    {
        return Ok((provider, group, StateSource::PublicState));
    }
    let provider = OpenMlsRustCrypto::default();
    let group = group_from_group_info(&provider, verifiable).map_err(|_| MlsError::InvalidState)?;
    if group.group_context().epoch().as_u64() != state.epoch {
        return Err(MlsError::InvalidState);
    }
    Ok((provider, group, StateSource::GroupInfo))
}
