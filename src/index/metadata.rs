//! The metadata document the index keeps per instance: its DICOM JSON
//! (PS3.18 Annex F, written once at ingest), deflate-compressed. Ingest
//! deflates it; WADO-RS metadata, QIDO `includefield` and the pixel
//! pipeline inflate it.

use std::io::{Read, Write};

/// Compresses a metadata document for the index.
pub(crate) fn deflate(json: &str) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(json.len() / 3),
        flate2::Compression::fast(),
    );
    enc.write_all(json.as_bytes())?;
    enc.finish()
}

/// Inflates a stored metadata document.
pub(crate) fn inflate(doc: &[u8]) -> std::io::Result<String> {
    let mut out = String::with_capacity(doc.len() * 4);
    flate2::read::DeflateDecoder::new(doc).read_to_string(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let json = r#"[{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Nguyễn^Văn"}]}}]"#;
        assert_eq!(
            super::inflate(&super::deflate(json).unwrap()).unwrap(),
            json
        );
        assert!(super::inflate(b"not deflate").is_err());
    }
}
