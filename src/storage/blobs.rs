//! The content-addressed blob folder: avatars, attachments, encrypted key backups.
//!
//! A blob's id is the lowercase hex SHA-256 of its bytes, and it lives at
//! `<data_dir>/blobs/<first two hex>/<full hex>`; the two-character fan-out keeps any one
//! directory small. A put writes a temporary file under `blobs/tmp/`, fsyncs it, renames it into
//! place and fsyncs the target directory, so after a crash a blob is either complete under its
//! name or absent — never half-written under its name. Because the name is the content, a put of
//! bytes already stored does nothing, and two racing puts of the same bytes both succeed.
//!
//! Everything here is blocking file I/O; the bridge calls it through `spawn_blocking`.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const HEX_LEN: usize = 64;
const TMP_DIR: &str = "tmp";

/// Identifies a blob: the lowercase hex SHA-256 of its content.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(String);

impl BlobId {
    /// Accepts exactly 64 lowercase hex characters. Uppercase is refused rather than folded so
    /// that every blob has one spelling (one URL, one cache entry, one path).
    pub fn parse(text: &str) -> Option<BlobId> {
        let valid = text.len() == HEX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| BlobId(text.to_owned()))
    }

    /// The id `bytes` are stored under.
    pub fn of_content(bytes: &[u8]) -> BlobId {
        let digest = Sha256::digest(bytes);
        let mut hex = String::with_capacity(HEX_LEN);
        for byte in digest {
            // Writing to a String cannot fail.
            let _ = fmt::Write::write_fmt(&mut hex, format_args!("{byte:02x}"));
        }
        BlobId(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the blob `id` lives under the data dir `data_dir` (whether or not it exists): what
/// the HTTP side opens to stream a download in pieces, instead of asking storage for the bytes.
pub fn blob_path(data_dir: &Path, id: &BlobId) -> PathBuf {
    data_dir
        .join("blobs")
        .join(&id.as_str()[..2])
        .join(id.as_str())
}

/// The blob folder on disk.
#[derive(Debug, Clone)]
pub(crate) struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) `<data_dir>/blobs`. Temporary files left by a crash during a
    /// put are deleted: no put can be in flight before the store is opened.
    pub(crate) fn open(data_dir: &Path) -> io::Result<BlobStore> {
        let root = data_dir.join("blobs");
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp)?;
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(BlobStore { root })
    }

    /// Where the blob with this id lives (whether or not it exists).
    pub(crate) fn path_of(&self, id: &BlobId) -> PathBuf {
        self.root.join(&id.as_str()[..2]).join(id.as_str())
    }

    /// Stores `bytes` durably and returns their id. Idempotent.
    pub(crate) fn put(&self, bytes: &[u8]) -> io::Result<BlobId> {
        let id = BlobId::of_content(bytes);
        let target = self.path_of(&id);
        if target.is_file() {
            return Ok(id);
        }
        let shard_dir = target
            .parent()
            .expect("a blob path always has a fan-out directory");
        fs::create_dir_all(shard_dir)?;

        // A random suffix keeps concurrent puts (of the same or different content) apart.
        let tmp_path =
            self.root
                .join(TMP_DIR)
                .join(format!("{}.{:016x}", id.as_str(), rand::random::<u64>()));
        let written = write_synced(&tmp_path, bytes).and_then(|()| fs::rename(&tmp_path, &target));
        if let Err(error) = written {
            let _ = fs::remove_file(&tmp_path);
            return Err(error);
        }
        // The rename is only durable once the directory entry is.
        File::open(shard_dir)?.sync_all()?;
        Ok(id)
    }

    /// The blob's bytes, or `None` if no blob has this id.
    pub(crate) fn get(&self, id: &BlobId) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path_of(id)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create_new(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "openchat-blobs-test-{:016x}",
                rand::random::<u64>()
            ));
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    // sha256("hello world"), a well-known test vector.
    const HELLO_SHA256: &str = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

    #[test]
    fn id_is_lowercase_hex_sha256() {
        assert_eq!(BlobId::of_content(b"hello world").as_str(), HELLO_SHA256);
    }

    #[test]
    fn parse_accepts_only_64_lowercase_hex() {
        assert_eq!(
            BlobId::parse(HELLO_SHA256),
            Some(BlobId::of_content(b"hello world"))
        );
        assert_eq!(BlobId::parse(&HELLO_SHA256.to_uppercase()), None);
        assert_eq!(BlobId::parse(&HELLO_SHA256[..63]), None);
        assert_eq!(BlobId::parse(&format!("{HELLO_SHA256}0")), None);
        assert_eq!(BlobId::parse(&HELLO_SHA256.replace('b', "g")), None);
        assert_eq!(BlobId::parse("../../etc/passwd"), None);
        assert_eq!(BlobId::parse(""), None);
    }

    #[test]
    fn put_then_get_round_trips() {
        let scratch = Scratch::new();
        let store = BlobStore::open(&scratch.0).unwrap();
        let id = store.put(b"hello world").unwrap();
        assert_eq!(id.as_str(), HELLO_SHA256);
        assert_eq!(
            store.get(&id).unwrap().as_deref(),
            Some(&b"hello world"[..])
        );
    }

    #[test]
    fn empty_blob_round_trips() {
        let scratch = Scratch::new();
        let store = BlobStore::open(&scratch.0).unwrap();
        let id = store.put(b"").unwrap();
        assert_eq!(store.get(&id).unwrap(), Some(Vec::new()));
    }

    #[test]
    fn blob_lives_under_its_two_hex_fan_out_directory() {
        let scratch = Scratch::new();
        let store = BlobStore::open(&scratch.0).unwrap();
        let id = store.put(b"hello world").unwrap();
        let expected = scratch.0.join("blobs").join("b9").join(HELLO_SHA256);
        assert_eq!(store.path_of(&id), expected);
        assert_eq!(blob_path(&scratch.0, &id), expected);
        assert_eq!(fs::read(&expected).unwrap(), b"hello world");
    }

    #[test]
    fn put_is_idempotent_and_leaves_no_temp_files() {
        let scratch = Scratch::new();
        let store = BlobStore::open(&scratch.0).unwrap();
        let first = store.put(b"same bytes").unwrap();
        let second = store.put(b"same bytes").unwrap();
        assert_eq!(first, second);
        assert_eq!(
            store.get(&first).unwrap().as_deref(),
            Some(&b"same bytes"[..])
        );
        let leftovers = fs::read_dir(scratch.0.join("blobs").join(TMP_DIR))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn get_of_missing_blob_is_none() {
        let scratch = Scratch::new();
        let store = BlobStore::open(&scratch.0).unwrap();
        assert_eq!(
            store.get(&BlobId::of_content(b"never stored")).unwrap(),
            None
        );
    }

    #[test]
    fn open_removes_leftover_temp_files() {
        let scratch = Scratch::new();
        let tmp = scratch.0.join("blobs").join(TMP_DIR);
        fs::create_dir_all(&tmp).unwrap();
        fs::write(tmp.join("half-written"), b"partial").unwrap();
        BlobStore::open(&scratch.0).unwrap();
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
