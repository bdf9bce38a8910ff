//! The transfer syntaxes Phim knows how to walk (PS3.5 §10, PS3.6 Table A-1).
//!
//! Storing an instance only needs its data set encoding (VR explicitness,
//! byte order, deflate); the pixel encoding matters to the pixel pipeline.

/// How the data set of a transfer syntax is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub(crate) explicit_vr: bool,
    pub(crate) big_endian: bool,
    /// The data set after the file meta group is deflated (RFC 1951).
    pub(crate) deflated: bool,
}

pub(crate) const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub(crate) const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub(crate) const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
pub(crate) const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";

/// A transfer syntax Phim accepts for storage.
#[derive(Debug, Clone, Copy)]
pub struct TransferSyntax {
    pub uid: &'static str,
    pub name: &'static str,
    pub encoding: Encoding,
    /// Pixel Data is encapsulated (fragments in items).
    pub encapsulated: bool,
}

const LE: Encoding = Encoding {
    explicit_vr: true,
    big_endian: false,
    deflated: false,
};

macro_rules! ts {
    ($uid:expr, $name:expr, $enc:expr, $encap:expr) => {
        TransferSyntax {
            uid: $uid,
            name: $name,
            encoding: $enc,
            encapsulated: $encap,
        }
    };
}

/// Every transfer syntax of PS3.6 Table A-1 that is not retired, plus the
/// retired ones still seen from modalities (JPEG extended 12-bit, big endian).
pub(crate) static KNOWN: &[TransferSyntax] = &[
    ts!(
        IMPLICIT_VR_LE,
        "Implicit VR Little Endian",
        Encoding {
            explicit_vr: false,
            big_endian: false,
            deflated: false
        },
        false
    ),
    ts!(EXPLICIT_VR_LE, "Explicit VR Little Endian", LE, false),
    ts!(
        "1.2.840.10008.1.2.1.98",
        "Encapsulated Uncompressed Explicit VR Little Endian",
        LE,
        true
    ),
    ts!(
        DEFLATED_EXPLICIT_VR_LE,
        "Deflated Explicit VR Little Endian",
        Encoding {
            explicit_vr: true,
            big_endian: false,
            deflated: true
        },
        false
    ),
    ts!(
        EXPLICIT_VR_BE,
        "Explicit VR Big Endian (retired)",
        Encoding {
            explicit_vr: true,
            big_endian: true,
            deflated: false
        },
        false
    ),
    ts!(
        "1.2.840.10008.1.2.4.50",
        "JPEG Baseline (Process 1)",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.51",
        "JPEG Extended (Process 2 & 4)",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.57",
        "JPEG Lossless (Process 14)",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless SV1 (Process 14, Selection Value 1)",
        LE,
        true
    ),
    ts!("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless", LE, true),
    ts!("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless", LE, true),
    ts!(
        "1.2.840.10008.1.2.4.90",
        "JPEG 2000 (Lossless Only)",
        LE,
        true
    ),
    ts!("1.2.840.10008.1.2.4.91", "JPEG 2000", LE, true),
    ts!(
        "1.2.840.10008.1.2.4.92",
        "JPEG 2000 Part 2 Multi-component (Lossless Only)",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.93",
        "JPEG 2000 Part 2 Multi-component",
        LE,
        true
    ),
    ts!("1.2.840.10008.1.2.4.94", "JPIP Referenced", LE, false),
    ts!(
        "1.2.840.10008.1.2.4.95",
        "JPIP Referenced Deflate",
        Encoding {
            explicit_vr: true,
            big_endian: false,
            deflated: true
        },
        false
    ),
    ts!(
        "1.2.840.10008.1.2.4.100",
        "MPEG2 Main Profile @ Main Level",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.101",
        "MPEG2 Main Profile @ High Level",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.102",
        "MPEG-4 AVC/H.264 High Profile / Level 4.1",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.103",
        "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.104",
        "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.105",
        "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.106",
        "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.107",
        "HEVC/H.265 Main Profile / Level 5.1",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.108",
        "HEVC/H.265 Main 10 Profile / Level 5.1",
        LE,
        true
    ),
    ts!("1.2.840.10008.1.2.4.110", "JPEG XL Lossless", LE, true),
    ts!(
        "1.2.840.10008.1.2.4.111",
        "JPEG XL JPEG Recompression",
        LE,
        true
    ),
    ts!("1.2.840.10008.1.2.4.112", "JPEG XL", LE, true),
    ts!(
        "1.2.840.10008.1.2.4.201",
        "High-Throughput JPEG 2000 (Lossless Only)",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.202",
        "High-Throughput JPEG 2000 with RPCL Options (Lossless Only)",
        LE,
        true
    ),
    ts!(
        "1.2.840.10008.1.2.4.203",
        "High-Throughput JPEG 2000",
        LE,
        true
    ),
    ts!("1.2.840.10008.1.2.5", "RLE Lossless", LE, true),
];

/// Looks up a transfer syntax by UID (trailing NUL/space padding ignored).
pub(crate) fn lookup(uid: &str) -> Option<&'static TransferSyntax> {
    let uid = uid.trim_end_matches(['\0', ' ']);
    KNOWN.iter().find(|ts| ts.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert!(!lookup("1.2.840.10008.1.2\0").unwrap().encoding.explicit_vr);
        assert!(lookup("1.2.840.10008.1.2.4.50").unwrap().encapsulated);
        assert!(lookup("1.2.840.10008.1.2.2").unwrap().encoding.big_endian);
        assert!(lookup("1.2.3.4").is_none());
    }
}
