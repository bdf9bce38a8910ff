#![allow(clippy::unwrap_used)]
//! One storage suite, run against the filesystem, memory and a real
//! S3-compatible server.

mod common;

use futures::TryStreamExt;
use phim::dicom::Uid;
use phim::store::{ObjectKey, S3Options, Store, StoreError, StoreLocation};

fn key(n: u32) -> ObjectKey {
    let u = |s: &str| Uid::parse(s).unwrap();
    ObjectKey::instance(&u("1.2"), &format!("{n:064}"))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn suite(store: Store) {
    store.ping().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Small object, one PUT; large object, multipart (over 8 MiB).
    for (n, len) in [(1u32, 1000usize), (2, 20 << 20), (3, 0)] {
        let data = pattern(len, n as u8);
        let path = dir.path().join(format!("{n}.part"));
        std::fs::write(&path, &data).unwrap();
        store
            .put_file(&key(n), &path, len as u64, false)
            .await
            .unwrap();
        assert!(path.exists(), "a file not given to move stays");
        assert_eq!(store.size(&key(n)).await.unwrap(), len as u64);
        let streamed: Vec<u8> = store
            .get_stream(&key(n))
            .await
            .unwrap()
            .try_fold(Vec::new(), |mut acc, c| async move {
                acc.extend_from_slice(&c);
                Ok(acc)
            })
            .await
            .unwrap();
        assert!(streamed == data, "object {n} round trip");
        if len > 100 {
            let r = store.get_range(&key(n), 10..100).await.unwrap();
            assert_eq!(&r[..], &data[10..100]);
        }
    }

    // Move semantics (filesystem takes the file, others copy it).
    let path = dir.path().join("moved.part");
    std::fs::write(&path, b"moved").unwrap();
    store.put_file(&key(4), &path, 5, true).await.unwrap();
    assert_eq!(&store.get_bytes(&key(4)).await.unwrap()[..], b"moved");
    assert_eq!(path.exists(), !store.is_local());

    // Delete, then not found; deleting again is fine.
    store.delete(&key(1)).await.unwrap();
    assert!(matches!(
        store.get_bytes(&key(1)).await,
        Err(StoreError::NotFound(_))
    ));
    store.delete(&key(1)).await.unwrap();
}

#[tokio::test]
async fn filesystem_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &StoreLocation::File(dir.path().join("objects")),
        &S3Options::default(),
    )
    .unwrap();
    suite(store).await;
}

#[tokio::test]
async fn memory_store() {
    suite(Store::open(&StoreLocation::Memory, &S3Options::default()).unwrap()).await;
}

#[tokio::test]
async fn s3_store() {
    suite(common::s3_store()).await;
}

#[test]
fn locations_parse() {
    assert_eq!(
        StoreLocation::parse("s3://bucket/a/b/").unwrap(),
        StoreLocation::S3 {
            bucket: "bucket".into(),
            prefix: "a/b".into()
        }
    );
    assert!(StoreLocation::parse("ftp://x").is_err());
    assert_eq!(
        StoreLocation::parse("memory://").unwrap(),
        StoreLocation::Memory
    );
}
