//! Where each frame lies in a stored instance (PS3.5 §8.2, Annex A.4), so
//! that a frame is served by range reads of the stored object, never by
//! reading the whole object.
//!
//! Native Pixel Data: frame `n` is `frame_len` bytes at `offset + n *
//! frame_len`. Encapsulated: the Basic Offset Table when present, else one
//! fragment per frame when the counts agree, else (one frame) all fragments.
//! The Extended Offset Table (7FE0,0001/0002) is used when present.

use dicom_core::VR;

use super::scan::{Fragment, Scanned, Value};
use super::tags;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameIndex {
    /// `bits_allocated` tells how to swap big-endian samples;
    /// `word_swapped`: 8-bit samples in OW words of a big-endian syntax,
    /// which are stored with each pair of bytes swapped (PS3.5 §8.1.1 and
    /// Annex A.3: the value is a stream of big-endian 16-bit words).
    Native {
        offset: u64,
        frame_len: u64,
        frames: u64,
        bits_allocated: u64,
        word_swapped: bool,
    },
    /// Byte ranges (offset, length) of each frame's fragments.
    Encapsulated(Vec<Vec<(u64, u64)>>),
}

impl FrameIndex {
    pub fn frames(&self) -> u64 {
        match self {
            FrameIndex::Native { frames, .. } => *frames,
            FrameIndex::Encapsulated(f) => f.len() as u64,
        }
    }

    /// Bytes per sample to swap when serving big-endian native frames as
    /// little endian (0: no swap).
    pub(crate) fn swap_width(&self) -> usize {
        match self {
            FrameIndex::Native {
                bits_allocated: 16, ..
            } => 2,
            FrameIndex::Native {
                bits_allocated: 32, ..
            } => 4,
            FrameIndex::Native {
                bits_allocated: 64, ..
            } => 8,
            _ => 0,
        }
    }

    /// The byte ranges to read for frame `n` (0-based); for word-swapped
    /// data widened to whole words, which [`FrameIndex::unswap_words`]
    /// turns into the frame's samples.
    pub fn ranges(&self, n: u64) -> Option<Vec<(u64, u64)>> {
        match self {
            FrameIndex::Native {
                offset,
                frame_len,
                frames,
                word_swapped,
                ..
            } => (n < *frames).then(|| {
                let rel = n * frame_len;
                if *word_swapped {
                    let (lo, hi) = (rel & !1, (rel + frame_len + 1) & !1);
                    vec![(offset + lo, hi - lo)]
                } else {
                    vec![(offset + rel, *frame_len)]
                }
            }),
            FrameIndex::Encapsulated(f) => f.get(n as usize).cloned(),
        }
    }

    /// The samples of frame `n` in order from what [`FrameIndex::ranges`]
    /// read: for word-swapped data each pair of bytes swapped back and the
    /// frame cut out of its words; anything else unchanged.
    pub fn unswap_words(&self, n: u64, mut read: Vec<u8>) -> Vec<u8> {
        let FrameIndex::Native {
            frame_len,
            word_swapped: true,
            ..
        } = self
        else {
            return read;
        };
        read.chunks_exact_mut(2).for_each(|c| c.swap(0, 1));
        let skip = usize::try_from((n * frame_len) & 1).unwrap_or(0);
        let len = usize::try_from(*frame_len).unwrap_or(usize::MAX);
        read.into_iter().skip(skip).take(len).collect()
    }

    /// A compact binary form for the index.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            FrameIndex::Native {
                offset,
                frame_len,
                frames,
                bits_allocated,
                word_swapped,
            } => {
                out.push(0);
                for v in [offset, frame_len, frames, bits_allocated] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(&u64::from(*word_swapped).to_le_bytes());
            }
            FrameIndex::Encapsulated(frames) => {
                out.push(1);
                out.extend_from_slice(&(frames.len() as u64).to_le_bytes());
                for ranges in frames {
                    out.extend_from_slice(&(ranges.len() as u64).to_le_bytes());
                    for (o, l) in ranges {
                        out.extend_from_slice(&o.to_le_bytes());
                        out.extend_from_slice(&l.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<FrameIndex> {
        let mut pos = 1usize;
        let mut u = || -> Option<u64> {
            let b: [u8; 8] = bytes.get(pos..pos + 8)?.try_into().ok()?;
            pos += 8;
            Some(u64::from_le_bytes(b))
        };
        match bytes.first()? {
            0 => Some(FrameIndex::Native {
                offset: u()?,
                frame_len: u()?,
                frames: u()?,
                bits_allocated: u()?,
                // Absent in rows written before it was recorded.
                word_swapped: u() == Some(1),
            }),
            1 => {
                let n = u()?;
                let mut frames = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    let k = u()?;
                    let mut ranges = Vec::with_capacity(k.min(1 << 16) as usize);
                    for _ in 0..k {
                        ranges.push((u()?, u()?));
                    }
                    frames.push(ranges);
                }
                Some(FrameIndex::Encapsulated(frames))
            }
            _ => None,
        }
    }
}

/// The frame index of a scanned instance; `None` without (usable) Pixel Data.
pub fn frame_index(s: &Scanned) -> Option<FrameIndex> {
    let px = s.get(tags::PIXEL_DATA)?;
    let frames = s.uint(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    match &px.value {
        Value::Encapsulated {
            fragments,
            offset_table,
        } => encapsulated(s, fragments, offset_table, frames),
        Value::Bulk | Value::Inline(_) => {
            let rows = s.uint(tags::ROWS)?;
            let cols = s.uint(tags::COLUMNS)?;
            let spp = s.uint(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
            let bits = s.uint(tags::BITS_ALLOCATED)?;
            // YBR_FULL_422 keeps two samples per pixel natively (PS3.3
            // C.7.6.3.1.2: Y Y Cb Cr for each pair of pixels).
            let ybr422 = s
                .text(tags::PHOTOMETRIC_INTERPRETATION)
                .is_some_and(|p| p.trim() == "YBR_FULL_422");
            let stored_spp = if ybr422 && spp == 3 { 2 } else { spp };
            let frame_bits = rows
                .checked_mul(cols)?
                .checked_mul(stored_spp)?
                .checked_mul(bits)?;
            // 1-bit frames need not start on a byte boundary: not indexed.
            if frame_bits % 8 != 0 || frame_bits == 0 {
                return None;
            }
            let frame_len = frame_bits / 8;
            if frame_len.checked_mul(frames)? > px.length {
                return None;
            }
            Some(FrameIndex::Native {
                offset: px.offset,
                frame_len,
                frames,
                bits_allocated: bits,
                word_swapped: s.encoding().big_endian && bits <= 8 && px.vr == VR::OW,
            })
        }
        Value::Sequence { .. } => None,
    }
}

fn encapsulated(
    s: &Scanned,
    fragments: &[Fragment],
    offset_table: &[u8],
    frames: u64,
) -> Option<FrameIndex> {
    let data = fragments.get(1..).filter(|d| !d.is_empty())?;
    let be = s.encoding().big_endian;
    // Frame starts, relative to the first byte of the first data item.
    let bot: Vec<u64> = offset_table
        .chunks_exact(4)
        .map(|c| {
            let a = [c[0], c[1], c[2], c[3]];
            (if be {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }) as u64
        })
        .collect();
    let starts = extended_offsets(s).or((!bot.is_empty()).then_some(bot));
    if let Some(starts) = starts.filter(|st| st.len() as u64 == frames) {
        let base = data[0].offset - 8;
        let grouped: Vec<Vec<(u64, u64)>> = starts
            .iter()
            .enumerate()
            .map(|(i, start)| {
                let lo = base + start;
                let hi = starts.get(i + 1).map(|e| base + e).unwrap_or(u64::MAX);
                data.iter()
                    .filter(|f| f.offset - 8 >= lo && f.offset - 8 < hi)
                    .map(|f| (f.offset, f.length))
                    .collect()
            })
            .collect();
        if grouped.iter().all(|r| !r.is_empty()) {
            return Some(FrameIndex::Encapsulated(grouped));
        }
    }
    if data.len() as u64 == frames {
        return Some(FrameIndex::Encapsulated(
            data.iter().map(|f| vec![(f.offset, f.length)]).collect(),
        ));
    }
    if frames == 1 {
        return Some(FrameIndex::Encapsulated(vec![data
            .iter()
            .map(|f| (f.offset, f.length))
            .collect()]));
    }
    None
}

/// Extended Offset Table (7FE0,0001), PS3.3 C.7.6.3.1.8, when kept inline.
fn extended_offsets(s: &Scanned) -> Option<Vec<u64>> {
    let e = s.get(dicom_core::Tag(0x7FE0, 0x0001))?;
    let Value::Inline(b) = &e.value else {
        return None;
    };
    Some(
        b.chunks_exact(8)
            .map(|c| {
                let a: [u8; 8] = c.try_into().unwrap_or([0; 8]);
                if s.encoding().big_endian {
                    u64::from_be_bytes(a)
                } else {
                    u64::from_le_bytes(a)
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trip() {
        let n = FrameIndex::Native {
            offset: 1000,
            frame_len: 512,
            frames: 7,
            bits_allocated: 16,
            word_swapped: false,
        };
        assert_eq!(FrameIndex::decode(&n.encode()), Some(n.clone()));
        assert_eq!(n.ranges(6), Some(vec![(1000 + 6 * 512, 512)]));
        assert_eq!(n.ranges(7), None);
        let e = FrameIndex::Encapsulated(vec![vec![(10, 5)], vec![(20, 3), (31, 4)]]);
        assert_eq!(FrameIndex::decode(&e.encode()), Some(e));
        assert_eq!(FrameIndex::decode(&[1, 255]), None);
        // A row written before `word_swapped` was recorded.
        assert_eq!(FrameIndex::decode(&n.encode()[..33]), Some(n));
    }

    #[test]
    fn word_swapped_frames_of_odd_length() {
        // Two 3-byte frames of 8-bit samples 0..6 in big-endian OW words,
        // padded to 6 bytes: stored as 1 0 3 2 5 4.
        let stored = [1u8, 0, 3, 2, 5, 4];
        let n = FrameIndex::Native {
            offset: 100,
            frame_len: 3,
            frames: 2,
            bits_allocated: 8,
            word_swapped: true,
        };
        let frame = |k: u64| {
            let ranges = n.ranges(k).unwrap();
            let read: Vec<u8> = ranges
                .iter()
                .flat_map(|(o, l)| stored[(o - 100) as usize..(o - 100 + l) as usize].to_vec())
                .collect();
            n.unswap_words(k, read)
        };
        assert_eq!(n.ranges(0), Some(vec![(100, 4)]));
        assert_eq!(n.ranges(1), Some(vec![(102, 4)]));
        assert_eq!(frame(0), vec![0, 1, 2]);
        assert_eq!(frame(1), vec![3, 4, 5]);
    }
}
