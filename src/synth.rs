//! Deterministic synthetic studies for tests and benchmarks: a seeded
//! generator of realistic-looking Part 10 files (CT, MR, CR, US cine), so
//! no test data is committed and every run sees the same bytes.
//!
//! Files are Explicit VR Little Endian, written with `dicom::write`.

use crate::dicom::transfer_syntax::EXPLICIT_VR_LE;
use crate::dicom::write::{file_meta_prefix, ElementWriter as DataSetWriter};

/// A small, fast, seedable generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Roughly normal noise (sum of uniforms), mean 0, sd ~1.
    pub(crate) fn noise(&mut self) -> f32 {
        let mut s = 0.0f32;
        for _ in 0..4 {
            s += (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        }
        (s - 2.0) * 1.73
    }
}

/// Wraps a data set in a Part 10 file (preamble, DICM, meta group).
pub(crate) fn part10(
    sop_class: &str,
    sop_instance: &str,
    transfer_syntax: &str,
    dataset: &[u8],
) -> Vec<u8> {
    let mut out = file_meta_prefix(sop_class, sop_instance, transfer_syntax);
    out.extend_from_slice(dataset);
    out
}

/// Kinds of generated instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 512×512, 16-bit signed, one slice of a series.
    Ct,
    /// 256×256, 16-bit unsigned.
    Mr,
    /// 2000×2500, 16-bit (12 stored).
    Cr,
    /// 640×480 RGB, 8-bit, multi-frame cine.
    UsCine { frames: u32 },
}

impl Kind {
    fn modality(self) -> &'static str {
        match self {
            Kind::Ct => "CT",
            Kind::Mr => "MR",
            Kind::Cr => "CR",
            Kind::UsCine { .. } => "US",
        }
    }
    fn sop_class(self) -> &'static str {
        match self {
            Kind::Ct => "1.2.840.10008.5.1.4.1.1.2",
            Kind::Mr => "1.2.840.10008.5.1.4.1.1.4",
            Kind::Cr => "1.2.840.10008.5.1.4.1.1.1",
            Kind::UsCine { .. } => "1.2.840.10008.5.1.4.1.1.3.1",
        }
    }
}

const ROOT: &str = "2.25";

/// Given and family names, with Vietnamese diacritics among them.
const FAMILY: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Smith", "Müller", "García", "Võ", "Đặng",
];
const GIVEN: &[&str] = &[
    "Văn An",
    "Thị Bích",
    "Minh Đức",
    "Quốc Huy",
    "John",
    "Anna",
    "Thu Hà",
    "Hữu Phước",
];

/// Description of one generated study.
#[derive(Debug, Clone)]
pub struct StudySpec {
    pub index: u64,
    pub kind: Kind,
    /// Instances in the (single) series.
    pub instances: u32,
}

/// A generated patient + study identity.
#[derive(Debug, Clone)]
pub struct StudyIdentity {
    pub patient_name: String,
    pub patient_id: String,
    pub(crate) birth_date: String,
    pub(crate) sex: &'static str,
    pub study_uid: String,
    pub series_uid: String,
    pub accession: String,
    pub study_date: String,
}

pub fn identity(seed: u64, study_index: u64) -> StudyIdentity {
    let mut r = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(study_index));
    let family = FAMILY[r.below(FAMILY.len() as u64) as usize];
    let given = GIVEN[r.below(GIVEN.len() as u64) as usize];
    let year = 2019 + r.below(7);
    let month = 1 + r.below(12);
    let day = 1 + r.below(28);
    StudyIdentity {
        patient_name: format!("{family}^{given}"),
        patient_id: format!("PID{:06}", r.below(50_000)),
        birth_date: format!(
            "{}{:02}{:02}",
            1940 + r.below(70),
            1 + r.below(12),
            1 + r.below(28)
        ),
        sex: if r.below(2) == 0 { "F" } else { "M" },
        study_uid: format!("{ROOT}.{}{:06}1", seed % 1000 + 1, study_index),
        series_uid: format!("{ROOT}.{}{:06}2", seed % 1000 + 1, study_index),
        accession: format!("ACC{:08}", r.below(100_000_000)),
        study_date: format!("{year}{month:02}{day:02}"),
    }
}

/// Generates instance `n` (0-based) of a study as a Part 10 file.
pub fn instance(seed: u64, spec: &StudySpec, n: u32) -> Vec<u8> {
    instance_sized(seed, spec, n, None)
}

/// Like [`instance`], with the image size (rows, columns) overridden when
/// `size` is given: small images (e.g. 64×64) build a large query index
/// quickly. Everything but the pixel matrix is the same as [`instance`].
pub fn instance_sized(seed: u64, spec: &StudySpec, n: u32, size: Option<(u16, u16)>) -> Vec<u8> {
    let frames = match spec.kind {
        Kind::UsCine { frames } => frames,
        _ => 1,
    };
    let (mut ds, sop_uid, rows, cols, bits) = header_sized(seed, spec, n, frames, size);
    let mut r = Rng::new(seed ^ (spec.index << 20) ^ n as u64);
    let mut all = pixel_data(&mut r, spec.kind, rows, cols, n, spec.instances);
    for f in 1..frames {
        let mut r2 = Rng::new(seed ^ f as u64);
        all.extend(pixel_data(&mut r2, spec.kind, rows, cols, f, frames));
    }
    ds.raw(0x7FE0, 0x0010, if bits == 8 { b"OB" } else { b"OW" }, &all);
    part10(
        spec.kind.sop_class(),
        &sop_uid,
        EXPLICIT_VR_LE,
        &ds.into_bytes(),
    )
}

/// The data set of an instance up to (not including) Pixel Data.
fn header(
    seed: u64,
    spec: &StudySpec,
    n: u32,
    frames: u32,
) -> (DataSetWriter, String, u16, u16, u16) {
    header_sized(seed, spec, n, frames, None)
}

/// [`header`] with an optional (rows, columns) override.
// long: one line per element of the generated data set, in tag order as
// they are written; split, the order would be harder to check.
fn header_sized(
    seed: u64,
    spec: &StudySpec,
    n: u32,
    frames: u32,
    size: Option<(u16, u16)>,
) -> (DataSetWriter, String, u16, u16, u16) {
    let id = identity(seed, spec.index);
    let sop_uid = format!("{}.{}", id.series_uid, n + 1);
    let (rows, cols, samples, bits, signed): (u16, u16, u16, u16, bool) = match spec.kind {
        Kind::Ct => (512, 512, 1, 16, true),
        Kind::Mr => (256, 256, 1, 16, false),
        Kind::Cr => (2500, 2000, 1, 16, false),
        Kind::UsCine { .. } => (480, 640, 3, 8, false),
    };
    let (rows, cols) = size.unwrap_or((rows, cols));
    let mut ds = DataSetWriter::default();
    ds.str(0x0008, 0x0005, b"CS", "ISO_IR 192")
        .str(0x0008, 0x0008, b"CS", "ORIGINAL\\PRIMARY\\AXIAL")
        .str(0x0008, 0x0016, b"UI", spec.kind.sop_class())
        .str(0x0008, 0x0018, b"UI", &sop_uid)
        .str(0x0008, 0x0020, b"DA", &id.study_date)
        .str(0x0008, 0x0030, b"TM", "101500")
        .str(0x0008, 0x0050, b"SH", &id.accession)
        .str(0x0008, 0x0060, b"CS", spec.kind.modality())
        .str(0x0008, 0x0070, b"LO", "Phim Synthetic")
        .str(0x0008, 0x0090, b"PN", "Trần^Bác Sĩ")
        .str(
            0x0008,
            0x1030,
            b"LO",
            &format!("{} study", spec.kind.modality()),
        )
        .str(
            0x0008,
            0x103E,
            b"LO",
            &format!("{} series", spec.kind.modality()),
        )
        .str(0x0010, 0x0010, b"PN", &id.patient_name)
        .str(0x0010, 0x0020, b"LO", &id.patient_id)
        .str(0x0010, 0x0030, b"DA", &id.birth_date)
        .str(0x0010, 0x0040, b"CS", id.sex);
    if spec.kind == Kind::Ct {
        ds.str(0x0018, 0x0050, b"DS", "2.5")
            .str(0x0018, 0x0060, b"DS", "120");
    }
    ds.str(0x0020, 0x000D, b"UI", &id.study_uid)
        .str(0x0020, 0x000E, b"UI", &id.series_uid)
        .str(0x0020, 0x0010, b"SH", "1")
        .str(0x0020, 0x0011, b"IS", "1")
        .str(0x0020, 0x0013, b"IS", &(n + 1).to_string());
    if matches!(spec.kind, Kind::Ct | Kind::Mr) {
        let z = n as f32 * 2.5;
        // One Frame of Reference per study (PS3.3 C.7.4.1): its series share
        // a patient coordinate system, as a scanner's series of one session do.
        ds.str(0x0020, 0x0032, b"DS", &format!("-250\\-250\\{z}"))
            .str(0x0020, 0x0037, b"DS", "1\\0\\0\\0\\1\\0")
            .str(0x0020, 0x0052, b"UI", &format!("{}.1", id.study_uid));
    }
    ds.us(0x0028, 0x0002, samples).str(
        0x0028,
        0x0004,
        b"CS",
        if samples == 3 { "RGB" } else { "MONOCHROME2" },
    );
    if samples == 3 {
        ds.us(0x0028, 0x0006, 0);
    }
    if frames > 1 {
        ds.str(0x0028, 0x0008, b"IS", &frames.to_string());
    }
    ds.us(0x0028, 0x0010, rows).us(0x0028, 0x0011, cols);
    if matches!(spec.kind, Kind::Ct | Kind::Mr) {
        ds.str(
            0x0028,
            0x0030,
            b"DS",
            if spec.kind == Kind::Ct {
                "0.9765625\\0.9765625"
            } else {
                "0.9\\0.9"
            },
        );
    }
    ds.us(0x0028, 0x0100, bits)
        .us(
            0x0028,
            0x0101,
            if spec.kind == Kind::Cr { 12 } else { bits },
        )
        .us(
            0x0028,
            0x0102,
            if spec.kind == Kind::Cr { 11 } else { bits - 1 },
        )
        .us(0x0028, 0x0103, signed as u16);
    if spec.kind == Kind::Ct {
        ds.str(0x0028, 0x1050, b"DS", "40")
            .str(0x0028, 0x1051, b"DS", "400")
            .str(0x0028, 0x1052, b"DS", "-1024")
            .str(0x0028, 0x1053, b"DS", "1");
    }
    (ds, sop_uid, rows, cols, bits)
}

/// A phantom: an elliptic body with a few "organs" and noise, so that
/// compression behaves as on real images.
fn pixel_data(r: &mut Rng, kind: Kind, rows: u16, cols: u16, n: u32, total: u32) -> Vec<u8> {
    let (h, w) = (rows as usize, cols as usize);
    let samples = if matches!(kind, Kind::UsCine { .. }) {
        3
    } else {
        1
    };
    let bytes_per = if samples == 3 { 1 } else { 2 };
    let mut out = Vec::with_capacity(h * w * samples * bytes_per);
    let t = n as f32 / total.max(1) as f32;
    for y in 0..h {
        for x in 0..w {
            let dx = (x as f32 - w as f32 / 2.0) / (w as f32 * 0.42);
            let dy = (y as f32 - h as f32 / 2.0) / (h as f32 * 0.36);
            let d = dx * dx + dy * dy;
            let ox = dx - 0.35;
            let organ = ox * ox + dy * dy < 0.05 + 0.03 * t;
            let lesion = (dx + 0.3).powi(2) + (dy - 0.2).powi(2) < 0.004 * (1.0 - (t - 0.5).abs());
            let base = match kind {
                Kind::Ct => {
                    if d > 1.0 {
                        0.0 // air (HU -1024 after rescale)
                    } else if lesion {
                        1024.0 + 90.0
                    } else if organ {
                        1024.0 + 60.0
                    } else if d > 0.9 {
                        1024.0 + 700.0 // bone ring
                    } else {
                        1024.0 + 35.0
                    }
                }
                Kind::Mr | Kind::Cr => {
                    if d > 1.0 {
                        20.0
                    } else if organ {
                        900.0
                    } else {
                        500.0 + 200.0 * (1.0 - d)
                    }
                }
                Kind::UsCine { .. } => {
                    if d > 1.0 {
                        0.0
                    } else {
                        80.0 + 60.0 * ((x as f32 * 0.05 + n as f32).sin())
                    }
                }
            };
            let v = (base + r.noise() * if kind == Kind::Ct { 12.0 } else { 8.0 }).max(0.0);
            if samples == 3 {
                let g = v.min(255.0) as u8;
                out.extend_from_slice(&[g, g, g.saturating_add(10)]);
            } else {
                let cap = if kind == Kind::Cr { 4095.0 } else { 65535.0 };
                out.extend_from_slice(&(v.min(cap) as u16).to_le_bytes());
            }
        }
    }
    out
}

/// Writes a large multi-frame US cine (640×480 RGB, `frames` frames) to
/// `out` without holding it in memory: for flat-memory ingest checks.
pub fn write_large_cine(
    out: &mut impl std::io::Write,
    seed: u64,
    frames: u32,
) -> std::io::Result<u64> {
    let spec = StudySpec {
        index: 9_000 + seed,
        kind: Kind::UsCine { frames },
        instances: 1,
    };
    let (ds, sop_uid, rows, cols, _) = header(seed, &spec, 0, frames);
    let head = part10(
        spec.kind.sop_class(),
        &sop_uid,
        EXPLICIT_VR_LE,
        &ds.into_bytes(),
    );
    let frame_len = rows as u64 * cols as u64 * 3;
    let len = u32::try_from(frame_len * frames as u64)
        .map_err(|_| std::io::Error::other("too many frames for one OB value"))?;
    out.write_all(&head)?;
    let mut el = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0];
    el.extend_from_slice(&len.to_le_bytes());
    out.write_all(&el)?;
    // A cine loop of eight distinct frames.
    let distinct: Vec<Vec<u8>> = (0..8u32)
        .map(|f| pixel_data(&mut Rng::new(seed ^ f as u64), spec.kind, rows, cols, f, 8))
        .collect();
    for f in 0..frames as usize {
        out.write_all(&distinct[f % distinct.len()])?;
    }
    Ok(head.len() as u64 + el.len() as u64 + len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::scan::{scan_bytes, ScanLimits};
    use crate::dicom::tags;

    #[test]
    fn generated_files_scan_and_are_deterministic() {
        let spec = StudySpec {
            index: 3,
            kind: Kind::Mr,
            instances: 4,
        };
        let a = instance(7, &spec, 1);
        assert_eq!(a, instance(7, &spec, 1));
        assert_ne!(a, instance(8, &spec, 1));
        let s = scan_bytes(&a, &ScanLimits::default()).unwrap();
        assert_eq!(s.text(tags::MODALITY).as_deref(), Some("MR"));
        assert_eq!(s.uint(tags::ROWS), Some(256));
        assert_eq!(s.get(tags::PIXEL_DATA).unwrap().length, 256 * 256 * 2);
        assert!(s.text(tags::PATIENT_NAME).is_some());
    }

    #[test]
    fn sized_instances_keep_identity_and_shrink_pixels() {
        let spec = StudySpec {
            index: 5,
            kind: Kind::Ct,
            instances: 2,
        };
        let small = instance_sized(7, &spec, 0, Some((64, 64)));
        let s = scan_bytes(&small, &ScanLimits::default()).unwrap();
        assert_eq!(s.uint(tags::ROWS), Some(64));
        assert_eq!(s.uint(tags::COLUMNS), Some(64));
        assert_eq!(s.get(tags::PIXEL_DATA).unwrap().length, 64 * 64 * 2);
        let full = scan_bytes(&instance(7, &spec, 0), &ScanLimits::default()).unwrap();
        assert_eq!(s.text(tags::PATIENT_NAME), full.text(tags::PATIENT_NAME));
        assert_eq!(instance(7, &spec, 0), instance_sized(7, &spec, 0, None));
    }

    #[test]
    fn large_cine_is_valid() {
        let mut buf = Vec::new();
        let n = write_large_cine(&mut buf, 1, 3).unwrap();
        assert_eq!(n as usize, buf.len());
        let s = scan_bytes(&buf, &ScanLimits::default()).unwrap();
        assert_eq!(s.uint(tags::NUMBER_OF_FRAMES), Some(3));
        assert_eq!(s.get(tags::PIXEL_DATA).unwrap().length, 3 * 640 * 480 * 3);
    }
}
