//! The object key layout, in one place.
//!
//! `studies/{study}/{sha256[..32]}.dcm`: grouped by study so a study can be
//! listed or removed by prefix, and named by content hash so a different
//! object for the same SOP Instance UID never overwrites the stored one
//! before the index has decided (the index maps SOP Instance UIDs to keys).
//! Keys stay under 120 bytes: S3 allows 1024, but some servers map keys to
//! file names and fail far earlier (s3s-fs at about 160).

use object_store::path::Path;

use crate::dicom::Uid;

/// Where instance objects live (and only they).
pub(crate) const INSTANCE_PREFIX: &str = "studies";
/// Where rendered thumbnails live.
const THUMBNAIL_PREFIX: &str = "thumbnails";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey(Path);

impl ObjectKey {
    pub fn instance(study: &Uid, sha256_hex: &str) -> ObjectKey {
        let name = sha256_hex.get(..32).unwrap_or(sha256_hex);
        ObjectKey(Path::from(format!("{INSTANCE_PREFIX}/{study}/{name}.dcm")))
    }

    /// A rendered thumbnail (see `imaging::thumbnail`). `version` changes
    /// when the series gains or loses instances or its representative
    /// instance changes, so a stale thumbnail is never served and none
    /// needs invalidating.
    pub fn thumbnail(study: &Uid, series: &Uid, version: &str, name: &str) -> ObjectKey {
        ObjectKey(Path::from(format!(
            "{THUMBNAIL_PREFIX}/{study}/{series}/{version}/{name}"
        )))
    }

    /// The prefix of every thumbnail of a study (removed when the study is
    /// purged).
    pub(crate) fn thumbnails_of(study: &str) -> Path {
        Path::from(format!("{THUMBNAIL_PREFIX}/{study}"))
    }

    /// A key that never exists, for readiness probes.
    pub(crate) fn readiness_probe() -> ObjectKey {
        ObjectKey(Path::from("phim/readiness-probe"))
    }

    /// A key read back from the index.
    pub(crate) fn from_stored(s: &str) -> Result<ObjectKey, object_store::path::Error> {
        Ok(ObjectKey(Path::parse(s)?))
    }

    /// A key listed by the store.
    pub(crate) fn from_path(path: Path) -> ObjectKey {
        ObjectKey(path)
    }

    pub(crate) fn as_path(&self) -> &Path {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_key_layout() {
        let u = |s| Uid::parse(s).unwrap();
        let sha = "abcdef0123456789abcdef0123456789ffff";
        let k = ObjectKey::instance(&u("1.2"), sha);
        assert_eq!(
            k.as_str(),
            "studies/1.2/abcdef0123456789abcdef0123456789.dcm"
        );
        let longest = ObjectKey::instance(&u(&"1".repeat(64)), &"f".repeat(64));
        assert!(longest.as_str().len() < 120);
        assert_eq!(ObjectKey::from_stored(k.as_str()).unwrap(), k);
    }
}
