//! The dedup snapshot: the memory backend's delivered IDs, written at shutdown and upgrade to
//! `state.snapshot_path` and read at start, so a restart does not forward again what was
//! delivered before it.
//!
//! # Format (version 1)
//!
//! All integers little-endian.
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `HKGSNAP1` |
//! | 32 | the secret delivery IDs are hashed with (keys are meaningless without it) |
//! | 4 | number of routes |
//! | per route: 2 + n | route name length, name (UTF-8) |
//! | per route: 4 + 20 × count | record count; per record the 128-bit key and the expiry (u32, seconds since the epoch) |
//! | 32 | SHA-256 of everything before it |
//!
//! Only keyed hashes are stored, never a delivery ID. The file holds the hashing secret,
//! so it is written with mode 0600, to a temporary file that is then renamed over the old one
//! (a crash mid-write leaves the previous snapshot). A file that is truncated, altered, of
//! another format or version is refused as a whole ([`SnapshotError`]); the caller logs it and
//! starts empty.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::dedup::DeliveryKey;

const MAGIC: &[u8; 8] = b"HKGSNAP1";
const DIGEST_LEN: usize = 32;
/// Longest route name the format holds (config names are far shorter).
const MAX_NAME_LEN: usize = u16::MAX as usize;

/// The delivered IDs of every deduplicating route, by route name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The secret of the delivery key hasher the keys were made with.
    pub key_secret: [u8; 32],
    /// Per route name: its delivered IDs with their expiry, oldest first.
    pub routes: Vec<(String, Vec<(DeliveryKey, u32)>)>,
}

/// Why a snapshot file was not used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read the snapshot: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a hookgate snapshot (or another version of the format)")]
    Foreign,
    #[error("the snapshot is corrupt ({0})")]
    Corrupt(&'static str),
}

impl Snapshot {
    /// Records held, over all routes.
    pub fn len(&self) -> usize {
        self.routes.iter().map(|(_, records)| records.len()).sum()
    }

    /// Whether no route holds a record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.len() * 20);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.key_secret);
        out.extend_from_slice(&(self.routes.len() as u32).to_le_bytes());
        for (name, records) in &self.routes {
            let name = &name.as_bytes()[..name.len().min(MAX_NAME_LEN)];
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&(records.len() as u32).to_le_bytes());
            for (key, expires) in records {
                out.extend_from_slice(&key.as_u128().to_le_bytes());
                out.extend_from_slice(&expires.to_le_bytes());
            }
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Parses a file's bytes; any damage refuses the whole file.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::Foreign);
        }
        if bytes.len() < MAGIC.len() + 32 + 4 + DIGEST_LEN {
            return Err(SnapshotError::Corrupt("too short"));
        }
        let (body, digest) = bytes.split_at(bytes.len() - DIGEST_LEN);
        if Sha256::digest(body).as_slice() != digest {
            return Err(SnapshotError::Corrupt("checksum mismatch"));
        }
        let mut r = Reader(&body[MAGIC.len()..]);
        let key_secret: [u8; 32] = r.take(32)?.try_into().expect("32 bytes");
        let route_count = r.u32()?;
        let mut routes = Vec::new();
        for _ in 0..route_count {
            let len = usize::from(u16::from_le_bytes(r.array()?));
            let name = std::str::from_utf8(r.take(len)?)
                .map_err(|_| SnapshotError::Corrupt("route name is not UTF-8"))?
                .to_string();
            let count = r.u32()? as usize;
            // The count is checked against what is left before anything is allocated.
            if r.0.len() < count.saturating_mul(20) {
                return Err(SnapshotError::Corrupt("truncated records"));
            }
            let mut records = Vec::with_capacity(count);
            for _ in 0..count {
                let key = DeliveryKey::from_u128(u128::from_le_bytes(r.array()?));
                records.push((key, r.u32()?));
            }
            routes.push((name, records));
        }
        if !r.0.is_empty() {
            return Err(SnapshotError::Corrupt("trailing bytes"));
        }
        Ok(Self { key_secret, routes })
    }

    /// Writes the snapshot to `path` atomically (a temporary file in the same directory,
    /// renamed over `path`), readable by its owner only.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or_else(|| Path::new("."));
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let result = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            file.write_all(&self.encode())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Reads the snapshot at `path`; `Ok(None)` if there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, SnapshotError> {
        match std::fs::read(path) {
            Ok(bytes) => Self::decode(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// A cursor over the snapshot's bytes that fails on truncation.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Corrupt("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            key_secret: [7; 32],
            routes: vec![
                (
                    "dossiers".into(),
                    vec![
                        (DeliveryKey::from_u128(1 << 100 | 5), 1_800_000_000),
                        (DeliveryKey::from_u128(u128::MAX), 1_800_000_001),
                    ],
                ),
                ("empty".into(), vec![]),
            ],
        }
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dedup.snapshot");
        assert!(Snapshot::read(&path).unwrap().is_none());
        sample().write(&path).unwrap();
        assert_eq!(Snapshot::read(&path).unwrap(), Some(sample()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn damaged_or_foreign_files_are_refused_whole() {
        let good = sample().encode();
        assert!(matches!(
            Snapshot::decode(b"{\"not\": \"ours\"}"),
            Err(SnapshotError::Foreign)
        ));
        assert!(matches!(Snapshot::decode(b""), Err(SnapshotError::Foreign)));
        for cut in [9, 40, good.len() / 2, good.len() - 1] {
            assert!(
                matches!(
                    Snapshot::decode(&good[..cut]),
                    Err(SnapshotError::Corrupt(_))
                ),
                "cut at {cut}"
            );
        }
        // Every single flipped bit after the magic is caught.
        for i in MAGIC.len()..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(Snapshot::decode(&bad).is_err(), "byte {i}");
        }
        // A record count larger than the file, with a valid checksum: refused, not allocated.
        let mut huge = sample();
        huge.routes.truncate(1);
        huge.routes[0].1.clear();
        let mut bytes = huge.encode();
        bytes.truncate(bytes.len() - DIGEST_LEN);
        let at = bytes.len() - 4;
        bytes[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        assert!(matches!(
            Snapshot::decode(&bytes),
            Err(SnapshotError::Corrupt("truncated records"))
        ));
    }
}
