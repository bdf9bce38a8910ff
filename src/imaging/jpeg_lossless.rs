//! JPEG Lossless encoding, Process 14 with Selection Value 1 (PS3.5
//! A.4.1: transfer syntax 1.2.840.10008.1.2.4.70; ITU-T T.81 Annex H).
//!
//! Written here because no crate on crates.io fits: `ljpeg` (the one
//! lossless JPEG encoder with an API for it) is LGPL-2.1, which an
//! Apache-2.0 server that links statically cannot take, and the others
//! are test-fixture encoders with fixed Huffman tables. Decoding stays
//! with `jpeg-decoder` (`codec::decode`).
//!
//! One frame, one scan: SOI, DHT (one table per component, built from the
//! image's own difference statistics with the code-length-limited
//! procedure of Annex K.2), SOF3, SOS (predictor 1, point transform 0),
//! the entropy-coded differences with byte stuffing, EOI. Colour images
//! are one interleaved scan of three components, each with its own
//! predictor history and table.

use super::ImagingError;

/// Selection value 1: the sample to the left (T.81 Table H.1).
const PREDICTOR: u8 = 1;

/// Encodes `samples` (`height` rows of `width × components` interleaved
/// values, each below 2^`precision`) as a lossless JPEG stream.
pub(crate) fn encode(
    samples: &[u16],
    width: u32,
    height: u32,
    components: usize,
    precision: u8,
) -> Result<Vec<u8>, ImagingError> {
    let refuse = |m: String| Err(ImagingError::Unsupported(format!("JPEG Lossless: {m}")));
    if !(2..=16).contains(&precision) {
        return refuse(format!("{precision}-bit samples (2 to 16 are coded)"));
    }
    if components != 1 && components != 3 {
        return refuse(format!("{components} samples per pixel (1 or 3 are coded)"));
    }
    let (Ok(w16), Ok(h16)) = (u16::try_from(width), u16::try_from(height)) else {
        return refuse(format!("{width}×{height} pixels (at most 65535 each way)"));
    };
    if width == 0 || height == 0 {
        return refuse("an empty image".into());
    }
    let (w, h) = (width as usize, height as usize);
    if samples.len() != w * h * components {
        return Err(ImagingError::Corrupt(format!(
            "JPEG Lossless: {} samples for {w}×{h}×{components}",
            samples.len()
        )));
    }
    let max = if precision == 16 {
        u16::MAX
    } else {
        (1u16 << precision) - 1
    };
    if samples.iter().any(|&s| s > max) {
        return Err(ImagingError::Corrupt(format!(
            "JPEG Lossless: a sample exceeds {precision} bits"
        )));
    }

    // Pass 1: the differences (modulo 2^16, H.1.2.2) and their categories.
    let diffs = differences(samples, w, h, components, precision);
    let mut freq = vec![[0u32; 17]; components];
    for (i, &d) in diffs.iter().enumerate() {
        freq[i % components][usize::from(category(d))] += 1;
    }
    let tables: Vec<Table> = freq.iter().map(Table::optimal).collect();

    let mut out = Vec::with_capacity(samples.len() * usize::from(precision) / 10 + 256);
    out.extend_from_slice(&[0xFF, 0xD8]); // SOI
                                          // DHT: class 0 (DC and lossless), one table per component.
    let dht_len: usize = 2 + tables.iter().map(|t| 17 + t.values.len()).sum::<usize>();
    out.extend_from_slice(&[0xFF, 0xC4]);
    out.extend_from_slice(&(dht_len as u16).to_be_bytes());
    for (id, t) in tables.iter().enumerate() {
        out.push(id as u8);
        out.extend_from_slice(&t.bits);
        out.extend_from_slice(&t.values);
    }
    // SOF3: precision, lines, samples per line, components (H = V = 1).
    out.extend_from_slice(&[0xFF, 0xC3]);
    out.extend_from_slice(&(8 + 3 * components as u16).to_be_bytes());
    out.push(precision);
    out.extend_from_slice(&h16.to_be_bytes());
    out.extend_from_slice(&w16.to_be_bytes());
    out.push(components as u8);
    for c in 0..components as u8 {
        out.extend_from_slice(&[c + 1, 0x11, 0]);
    }
    // SOS: every component, its own table; Ss = predictor, Se = 0, Ah/Al = 0.
    out.extend_from_slice(&[0xFF, 0xDA]);
    out.extend_from_slice(&(6 + 2 * components as u16).to_be_bytes());
    out.push(components as u8);
    for c in 0..components as u8 {
        out.extend_from_slice(&[c + 1, c << 4]);
    }
    out.extend_from_slice(&[PREDICTOR, 0, 0]);

    // Pass 2: the entropy-coded segment.
    let mut bits = BitWriter::new(out);
    for (i, &d) in diffs.iter().enumerate() {
        let t = &tables[i % components];
        let ssss = category(d);
        let s = usize::from(ssss);
        bits.put(u32::from(t.code[s]), t.size[s]);
        if (1..16).contains(&ssss) {
            // F.1.2.1: negative differences as diff − 1, low SSSS bits.
            let v = d as i16 as i32;
            let extra = if v < 0 { v - 1 } else { v } as u32 & ((1 << ssss) - 1);
            bits.put(extra, ssss);
        }
    }
    let mut out = bits.finish();
    out.extend_from_slice(&[0xFF, 0xD9]); // EOI
    Ok(out)
}

/// The differences of predictor 1 with the first-row and first-column
/// rules of H.1.2.1, per component, modulo 2^16, in scan order.
fn differences(samples: &[u16], w: usize, h: usize, comps: usize, precision: u8) -> Vec<u16> {
    let first = 1u16 << (precision - 1);
    let mut out = Vec::with_capacity(samples.len());
    let row_len = w * comps;
    for y in 0..h {
        for x in 0..w {
            for c in 0..comps {
                let at = y * row_len + x * comps + c;
                let pred = match (y, x) {
                    (0, 0) => first,
                    (_, 0) => samples[at - row_len],
                    _ => samples[at - comps],
                };
                out.push(samples[at].wrapping_sub(pred));
            }
        }
    }
    out
}

/// SSSS of a difference modulo 2^16 (T.81 Table H.2): 32768 is category
/// 16, coded without additional bits.
fn category(d: u16) -> u8 {
    if d == 0x8000 {
        return 16;
    }
    let v = (d as i16).unsigned_abs();
    (16 - v.leading_zeros()) as u8
}

/// A Huffman table: BITS and HUFFVAL as written in DHT, and the code and
/// size of each category.
struct Table {
    bits: [u8; 16],
    values: Vec<u8>,
    code: [u16; 17],
    size: [u8; 17],
}

impl Table {
    /// The table for these category counts (T.81 K.2): code sizes by
    /// Figure K.1 with one reserved code point so that no code is all
    /// ones, limited to 16 bits by Figure K.3, values in order of size
    /// (K.4), canonical codes (Annex C).
    fn optimal(freq: &[u32; 17]) -> Table {
        const N: usize = 18; // 17 categories and the reserved point
        let mut f = [0u64; N];
        for (i, v) in freq.iter().enumerate() {
            f[i] = u64::from(*v);
        }
        f[17] = 1;
        let mut codesize = [0usize; N];
        let mut others: [Option<usize>; N] = [None; N];
        loop {
            // The two least frequencies (ties: the larger symbol, as libjpeg).
            let least = |skip: Option<usize>| {
                let mut best: Option<usize> = None;
                for i in 0..N {
                    if f[i] == 0 || Some(i) == skip {
                        continue;
                    }
                    if best.is_none_or(|b| f[i] <= f[b]) {
                        best = Some(i);
                    }
                }
                best
            };
            let Some(v1) = least(None) else { break };
            let Some(v2) = least(Some(v1)) else { break };
            f[v1] += f[v2];
            f[v2] = 0;
            let mut v = v1;
            codesize[v] += 1;
            while let Some(n) = others[v] {
                v = n;
                codesize[v] += 1;
            }
            others[v] = Some(v2);
            let mut v = v2;
            codesize[v] += 1;
            while let Some(n) = others[v] {
                v = n;
                codesize[v] += 1;
            }
        }
        // K.2: BITS by size, at most N long.
        let mut bits = [0u32; 40];
        for &s in &codesize {
            if s > 0 {
                bits[s] += 1;
            }
        }
        // K.3: no code longer than 16 bits.
        for i in (17..40).rev() {
            while bits[i] > 0 {
                let mut j = i - 2;
                while bits[j] == 0 {
                    j -= 1;
                }
                bits[i] -= 2;
                bits[i - 1] += 1;
                bits[j + 1] += 2;
                bits[j] -= 1;
            }
        }
        // The reserved code point goes (it has the longest code).
        if let Some(i) = (1..=16).rev().find(|&i| bits[i] > 0) {
            bits[i] -= 1;
        }
        // K.4: the used categories in order of code size, then value.
        let mut values = Vec::with_capacity(17);
        for size in 1..40 {
            for (sym, &s) in codesize.iter().enumerate().take(17) {
                if s == size {
                    values.push(sym as u8);
                }
            }
        }
        let mut table = Table {
            bits: [0; 16],
            values,
            code: [0; 17],
            size: [0; 17],
        };
        for (dst, &n) in table.bits.iter_mut().zip(&bits[1..=16]) {
            *dst = n as u8;
        }
        // Annex C: canonical codes, in the order of `values`.
        let mut code = 0u16;
        let mut k = 0;
        for l in 1..=16u8 {
            for _ in 0..table.bits[usize::from(l) - 1] {
                let sym = usize::from(table.values[k]);
                table.code[sym] = code;
                table.size[sym] = l;
                code = code.wrapping_add(1);
                k += 1;
            }
            code = code.wrapping_shl(1);
        }
        table
    }
}

/// Bits into bytes, most significant first, a 0x00 stuffed after each
/// 0xFF (F.1.2.3), the last byte padded with ones.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn new(out: Vec<u8>) -> BitWriter {
        BitWriter { out, acc: 0, n: 0 }
    }

    fn put(&mut self, value: u32, len: u8) {
        let len = u32::from(len);
        self.acc = (self.acc << len) | u64::from(value & ((1u32 << len) - 1));
        self.n += len;
        while self.n >= 8 {
            self.n -= 8;
            let b = (self.acc >> self.n) as u8;
            self.out.push(b);
            if b == 0xFF {
                self.out.push(0);
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.put((1 << pad) - 1, pad as u8);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        assert_eq!(category(0), 0);
        assert_eq!(category(1), 1);
        assert_eq!(category(0xFFFF), 1); // −1
        assert_eq!(category(2), 2);
        assert_eq!(category(0xFFFD), 2); // −3
        assert_eq!(category(32767), 15);
        assert_eq!(category(0x8001), 15); // −32767
        assert_eq!(category(0x8000), 16);
    }

    #[test]
    fn tables_are_prefix_free_and_at_most_16_bits() {
        // Skewed counts that an unlimited Huffman code would give lengths
        // over 16 (a Fibonacci-like distribution).
        let mut freq = [0u32; 17];
        let (mut a, mut b) = (1u32, 1u32);
        for f in freq.iter_mut() {
            *f = a;
            (a, b) = (b, a + b);
        }
        for freq in [freq, {
            let mut one = [0u32; 17];
            one[5] = 1000;
            one
        }] {
            let t = Table::optimal(&freq);
            let used: Vec<usize> = (0..17).filter(|&s| freq[s] > 0).collect();
            assert!(used.iter().all(|&s| (1..=16).contains(&t.size[s])));
            assert_eq!(
                t.bits.iter().map(|&b| usize::from(b)).sum::<usize>(),
                t.values.len()
            );
            // Kraft: strictly below 1 (no all-ones code).
            let kraft: f64 = used.iter().map(|&s| 0.5f64.powi(t.size[s].into())).sum();
            assert!(kraft < 1.0, "{kraft}");
            for &a in &used {
                for &b in &used {
                    if a != b && t.size[a] <= t.size[b] {
                        let prefix = t.code[b] >> (t.size[b] - t.size[a]);
                        assert_ne!(prefix, t.code[a], "{a} is a prefix of {b}");
                    }
                }
                assert_ne!(t.code[a], (1u32 << t.size[a]) as u16 - 1, "all ones");
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_code() {
        assert!(encode(&[0], 1, 1, 1, 1).is_err());
        assert!(encode(&[0], 1, 1, 1, 17).is_err());
        assert!(encode(&[0, 0], 1, 1, 2, 8).is_err());
        assert!(encode(&[256], 1, 1, 1, 8).is_err());
        assert!(encode(&[0, 0], 1, 1, 1, 8).is_err());
        assert!(encode(&[], 0, 1, 1, 8).is_err());
        assert!(encode(&vec![0; 70_000], 70_000, 1, 1, 8).is_err());
    }
}
