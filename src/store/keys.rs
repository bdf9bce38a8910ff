//! The object key layout, in one place.
//!
//! `studies/{study}/series/{series}/instances/{sop}/{sha256[..16]}.dcm`:
//! grouped by study so a study can be listed or removed by prefix, and
//! versioned by content hash so a different object for the same SOP Instance
//! UID never overwrites the stored one before the index has decided.

use object_store::path::Path;

use crate::dicom::Uid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey(Path);

impl ObjectKey {
    pub fn instance(study: &Uid, series: &Uid, sop: &Uid, sha256_hex: &str) -> ObjectKey {
        let version = sha256_hex.get(..16).unwrap_or(sha256_hex);
        ObjectKey(Path::from(format!(
            "studies/{study}/series/{series}/instances/{sop}/{version}.dcm"
        )))
    }

    /// A key that never exists, for readiness probes.
    pub fn readiness_probe() -> ObjectKey {
        ObjectKey(Path::from("phim/readiness-probe"))
    }

    /// A key read back from the index.
    pub fn from_stored(s: &str) -> Result<ObjectKey, object_store::path::Error> {
        Ok(ObjectKey(Path::parse(s)?))
    }

    pub fn as_path(&self) -> &Path {
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
        let k = ObjectKey::instance(&u("1.2"), &u("1.3"), &u("1.4"), "abcdef0123456789ffff");
        assert_eq!(
            k.as_str(),
            "studies/1.2/series/1.3/instances/1.4/abcdef0123456789.dcm"
        );
        assert_eq!(ObjectKey::from_stored(k.as_str()).unwrap(), k);
    }
}
