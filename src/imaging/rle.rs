//! RLE Lossless (PS3.5 Annex G), both ways.
//!
//! Written here rather than taken from dicom-pixeldata: its decoder
//! panicked on mutated input and once aborted the process allocating by a
//! header value, and it has no encoder. Every length below is checked
//! against the frame size computed from the Image Pixel module.
//!
//! A frame is a 64-byte header (number of segments, then 15 offsets) and
//! segments of PackBits-coded bytes (G.3.1): one segment per byte of each
//! sample, most significant byte first, sample by sample (G.2).

use super::ImagingError;

/// Decodes an RLE frame into `pixels × samples` samples of `bps` bytes,
/// little endian, colour-by-pixel.
pub fn decode(
    data: &[u8],
    pixels: usize,
    samples: usize,
    bps: usize,
) -> Result<Vec<u8>, ImagingError> {
    let corrupt = |m: &str| ImagingError::Corrupt(format!("RLE: {m}"));
    let header = data
        .get(..64)
        .ok_or_else(|| corrupt("frame shorter than its header"))?;
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let segments = word(0) as usize;
    let expected = samples * bps;
    if segments != expected {
        return Err(corrupt(&format!(
            "{segments} segments where the image needs {expected}"
        )));
    }
    let offsets: Vec<usize> = (0..segments).map(|i| word(4 + 4 * i) as usize).collect();
    let mut out = vec![0u8; pixels * samples * bps];
    let mut plane = vec![0u8; pixels];
    for (seg, &start) in offsets.iter().enumerate() {
        let end = offsets.get(seg + 1).copied().unwrap_or(data.len());
        if start < 64 || start > end || end > data.len() {
            return Err(corrupt("segment offsets out of order or out of the frame"));
        }
        unpack(&data[start..end], &mut plane).map_err(|m| corrupt(&m))?;
        let sample = seg / bps;
        // Segment 0 of a sample holds its most significant byte.
        let byte = bps - 1 - seg % bps;
        for (p, v) in plane.iter().enumerate() {
            out[(p * samples + sample) * bps + byte] = *v;
        }
    }
    Ok(out)
}

/// PackBits (G.3.1) into exactly `out.len()` bytes.
fn unpack(mut src: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut n = 0usize;
    while n < out.len() {
        let Some((&h, rest)) = src.split_first() else {
            return Err(format!("segment ends after {n} of {} bytes", out.len()));
        };
        src = rest;
        let h = h as i8;
        if h >= 0 {
            let len = h as usize + 1;
            let lit = src
                .get(..len)
                .ok_or_else(|| "literal run past the segment's end".to_owned())?;
            let room = (out.len() - n).min(len);
            out[n..n + room].copy_from_slice(&lit[..room]);
            n += room;
            src = &src[len..];
        } else if h != -128 {
            let len = (1 - h as isize) as usize;
            let (&v, rest) = src
                .split_first()
                .ok_or_else(|| "replicate run past the segment's end".to_owned())?;
            src = rest;
            let room = (out.len() - n).min(len);
            out[n..n + room].fill(v);
            n += room;
        }
    }
    Ok(())
}

/// Encodes one frame (little-endian, colour-by-pixel samples) as RLE.
pub fn encode(
    data: &[u8],
    rows: usize,
    columns: usize,
    samples: usize,
    bps: usize,
) -> Result<Vec<u8>, ImagingError> {
    let segments = samples * bps;
    if segments > 15 || data.len() < rows * columns * samples * bps {
        return Err(ImagingError::Unsupported(format!(
            "RLE encoding of {samples} samples of {bps} bytes"
        )));
    }
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(&(segments as u32).to_le_bytes());
    let mut plane = Vec::with_capacity(rows * columns);
    for seg in 0..segments {
        let offset = out.len() as u32;
        out[4 + 4 * seg..8 + 4 * seg].copy_from_slice(&offset.to_le_bytes());
        let sample = seg / bps;
        let byte = bps - 1 - seg % bps;
        plane.clear();
        plane.extend((0..rows * columns).map(|p| data[(p * samples + sample) * bps + byte]));
        // G.3.1: each row is coded separately.
        for row in plane.chunks(columns) {
            pack(row, &mut out);
        }
        if out.len() % 2 == 1 {
            out.push(0);
        }
    }
    Ok(out)
}

fn pack(row: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < row.len() {
        let mut run = 1;
        while i + run < row.len() && run < 128 && row[i + run] == row[i] {
            run += 1;
        }
        if run >= 2 {
            out.push((1 - run as isize) as i8 as u8);
            out.push(row[i]);
            i += run;
            continue;
        }
        // A literal run up to the next repeat of 2+ bytes.
        let start = i;
        while i < row.len() && i - start < 128 {
            if i + 1 < row.len() && row[i + 1] == row[i] {
                break;
            }
            i += 1;
        }
        if i == start {
            i += 1;
        }
        out.push((i - start - 1) as u8);
        out.extend_from_slice(&row[start..i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_16_bit_rgb_and_mono() {
        let mut seed = 7u32;
        for (rows, cols, samples, bps) in [(5, 7, 1, 2), (4, 3, 3, 1), (3, 130, 1, 1), (2, 2, 1, 4)]
        {
            let n = rows * cols * samples * bps;
            let data: Vec<u8> = (0..n)
                .map(|i| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    if i % 5 < 3 {
                        9
                    } else {
                        (seed >> 16) as u8
                    }
                })
                .collect();
            let enc = encode(&data, rows, cols, samples, bps).unwrap();
            let dec = decode(&enc, rows * cols, samples, bps).unwrap();
            assert_eq!(dec, data, "{rows}x{cols}x{samples}x{bps}");
        }
    }

    #[test]
    fn mutated_input_is_an_error_not_a_panic() {
        let data: Vec<u8> = (0..64u8).collect();
        let enc = encode(&data, 8, 8, 1, 1).unwrap();
        for i in 0..enc.len() {
            for v in [0u8, 0x7f, 0x80, 0xff] {
                let mut m = enc.clone();
                m[i] = v;
                let _ = decode(&m, 64, 1, 1);
            }
        }
        assert!(decode(&enc[..10], 64, 1, 1).is_err());
        assert!(decode(&enc, 64, 3, 1).is_err());
    }
}
