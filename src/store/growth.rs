//! The store's file grows with its blocks allocated at once. redb grows the file with `set_len`,
//! which leaves a hole: every page later written there allocates blocks, and the fsync of each
//! commit that writes one must journal that allocation too. Allocated when the file grows
//! (`fallocate`, metadata only, no bytes written), those pages are written in place, and a
//! commit's fsyncs cost less: on this machine's ext4 two `fdatasync`s after 20 page writes took
//! 0.7 ms into allocated space against 1.0 ms into holes. Reads, writes and durability are the
//! inner backend's; the allocated space reads as zeros, as a hole does.
//!
//! redb doubles the file as it grows; allocated space is taken from the disk at once, where a
//! hole takes nothing until written. So one growth allocates at most [`ALLOCATE_AHEAD_MAX`]
//! bytes past the old end (the pages redb fills first); the rest of a large growth stays a hole.

use redb::{BackendError, StorageBackend};
use std::ops::Bound;

/// Most bytes one growth allocates past the file's old end.
pub const ALLOCATE_AHEAD_MAX: u64 = 64 << 20;

#[derive(Debug)]
pub struct Allocating<B> {
    inner: B,
    /// A second handle on the inner backend's file, for `fallocate` alone.
    file: std::fs::File,
}

impl<B: StorageBackend> Allocating<B> {
    pub fn new(inner: B, file: std::fs::File) -> Allocating<B> {
        Allocating { inner, file }
    }
}

impl<B: StorageBackend> StorageBackend for Allocating<B> {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let before = self.inner.len()?;
        self.inner.set_len(len)?;
        if len > before {
            // Best effort: a filesystem without fallocate keeps the hole, as before.
            if let Err(e) = rustix::fs::fallocate(
                &self.file,
                rustix::fs::FallocateFlags::KEEP_SIZE,
                before,
                (len - before).min(ALLOCATE_AHEAD_MAX),
            ) {
                tracing::debug!(error = %e, "store: the file's new space not allocated; pages will allocate as written");
            }
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::{Allocating, ALLOCATE_AHEAD_MAX};
    use crate::store::{RedbStore, Store, TxRecord, TxSelect};
    use alloy::primitives::{Address, Bytes};
    use reconciler::TxPurpose;
    use redb::backends::FileBackend;
    use redb::StorageBackend;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_new_store_file_is_allocated_to_its_length_not_left_in_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuer.redb");
        let store = RedbStore::open(&path).unwrap();
        // Forty 64 KB transactions: the file grows past its first few MB.
        let network = reconciler::Network::parse("anvil").unwrap();
        let txs: Vec<TxRecord> = (0..40)
            .map(|nonce| TxRecord {
                nonce,
                from: Address::ZERO,
                to: Address::ZERO,
                purpose: TxPurpose::Mint {
                    vault: Address::ZERO,
                    issuer_request_ids: vec![],
                },
                input: Bytes::from(vec![7u8; 64 * 1024]),
                gas_limit: 0,
                variants: vec![],
                settled: None,
            })
            .collect();
        store.put_txs(&network, &txs).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(
            meta.len() > 1 << 20,
            "redb grew the file: {} bytes",
            meta.len()
        );
        assert!(
            meta.blocks() * 512 >= meta.len(),
            "{} bytes allocated of {}",
            meta.blocks() * 512,
            meta.len()
        );
        store.close();
        let reopened = RedbStore::open(&path).unwrap();
        assert_eq!(
            reopened.txs(&network, TxSelect::Unsettled).unwrap(),
            txs,
            "every byte reads back"
        );
    }

    #[test]
    fn a_large_growth_allocates_at_most_its_first_64_mib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grown");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let backend = Allocating::new(FileBackend::new(file.try_clone().unwrap()).unwrap(), file);
        backend.set_len(4 * ALLOCATE_AHEAD_MAX).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            meta.len(),
            4 * ALLOCATE_AHEAD_MAX,
            "the length redb asked for"
        );
        let allocated = meta.blocks() * 512;
        assert!(
            (ALLOCATE_AHEAD_MAX..2 * ALLOCATE_AHEAD_MAX).contains(&allocated),
            "{allocated} bytes allocated"
        );
        let mut page = vec![1u8; 4096];
        backend.read(3 * ALLOCATE_AHEAD_MAX, &mut page).unwrap();
        assert!(
            page.iter().all(|b| *b == 0),
            "a hole past it reads as zeros"
        );
    }
}
