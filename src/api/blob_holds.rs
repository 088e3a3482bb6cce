//! Blobs stored for a request that may still be refused. An upload stores its images before the
//! post (or avatar) is decided; if it is refused, the blobs it created must go, or they would be
//! kept forever and served to anyone who knows their hash. Blobs are content-addressed, though,
//! so the same bytes may belong to an accepted post too. The rule: a refused request removes a
//! blob only if the blob file did not exist when the request took its hold (so no stored
//! message or avatar referenced it before), and no other request held the same blob at any time
//! during this hold (so none can have stored a reference since). Holds are taken before the put
//! and released after the decision; a removal happens under the lock that takes holds, so a
//! request cannot find the file present and then see it vanish.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::storage::BlobId;

#[derive(Debug, Default)]
struct Entry {
    holders: usize,
    /// Another request held the blob while one of the current holders did.
    shared: bool,
}

/// The holds of one process (every shard shares it through `App`).
#[derive(Debug, Default)]
pub struct BlobHolds {
    held: Mutex<HashMap<BlobId, Entry>>,
}

/// One request's hold on one blob; a hold dropped without [`BlobHold::keep`] counts as refused.
#[derive(Debug)]
pub struct BlobHold<'a> {
    holds: &'a BlobHolds,
    id: BlobId,
    path: PathBuf,
    /// The blob file was absent when the hold was taken.
    created: bool,
    kept: bool,
}

impl BlobHolds {
    /// Takes a hold on `id` stored at `path`, before the blob is put.
    pub fn hold(&self, id: BlobId, path: PathBuf) -> BlobHold<'_> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let entry = held.entry(id.clone()).or_default();
        if entry.holders > 0 {
            entry.shared = true;
        }
        entry.holders += 1;
        // Under the lock: a refused holder removes the file only under it too.
        let created = !path.is_file();
        BlobHold {
            holds: self,
            id,
            path,
            created,
            kept: false,
        }
    }

    fn release(&self, id: &BlobId, path: &std::path::Path, remove_if_alone: bool) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = held.get_mut(id) else {
            return;
        };
        entry.holders -= 1;
        let alone = entry.holders == 0 && !entry.shared;
        if entry.holders == 0 {
            held.remove(id);
        } else {
            // Whoever still holds it shared it with this holder.
            entry.shared = true;
        }
        if remove_if_alone
            && alone
            && let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(blob = %id, error = %e, "could not remove the blob of a refused upload");
        }
    }
}

impl BlobHold<'_> {
    pub fn id(&self) -> &BlobId {
        &self.id
    }

    /// The request was accepted: its blob stays.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for BlobHold<'_> {
    fn drop(&mut self) {
        self.holds
            .release(&self.id, &self.path, !self.kept && self.created);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("openchat-holds-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_refused_hold_removes_only_what_it_created_alone() {
        let dir = scratch();
        let holds = BlobHolds::default();
        let id = BlobId::of_content(b"x");
        let path = dir.join("x");
        // Created and refused alone: removed.
        let hold = holds.hold(id.clone(), path.clone());
        std::fs::write(&path, b"x").unwrap();
        drop(hold);
        assert!(!path.exists());
        // Present before (a stored message references it): kept.
        std::fs::write(&path, b"x").unwrap();
        drop(holds.hold(id.clone(), path.clone()));
        assert!(path.exists());
        std::fs::remove_file(&path).unwrap();
        // Created, but another request held it meanwhile (and was accepted later): kept.
        let first = holds.hold(id.clone(), path.clone());
        std::fs::write(&path, b"x").unwrap();
        let second = holds.hold(id.clone(), path.clone());
        drop(first);
        assert!(path.exists());
        second.keep();
        assert!(path.exists());
        std::fs::remove_file(&path).unwrap();
        // The other order: the accepted one leaves first, the refused creator later.
        let first = holds.hold(id.clone(), path.clone());
        std::fs::write(&path, b"x").unwrap();
        let second = holds.hold(id.clone(), path.clone());
        second.keep();
        drop(first);
        assert!(path.exists());
        // Kept: stays.
        std::fs::remove_file(&path).unwrap();
        let hold = holds.hold(id.clone(), path.clone());
        std::fs::write(&path, b"x").unwrap();
        hold.keep();
        assert!(path.exists());
        assert!(holds.held.lock().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
