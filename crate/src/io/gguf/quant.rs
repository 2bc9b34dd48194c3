//! ggml tensor types and their block layouts (llama.cpp `ggml-quants.c`): dequantisation to f32 one block at a
//! time, and Q8_0 quantisation for export.

use half::f16;

/// The ggml tensor types prunelab reads (and, for F32 / F16 / Q8_0, writes).
#[allow(non_camel_case_types)] // the names ggml gives them
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    /// 4-bit indices into a fixed non-linear table (llama.cpp's fallback for K-quant rows not a multiple of 256).
    IQ4_NL,
    BF16,
}

/// IQ4_NL's values (llama.cpp `kvalues_iq4nl`).
const IQ4_NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

const QK_K: usize = 256;

impl GgmlType {
    /// From the type id stored in a GGUF tensor info; `None` for types we do not read.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2_K,
            11 => Self::Q3_K,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            20 => Self::IQ4_NL,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// The type id GGUF stores.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2_K => 10,
            Self::Q3_K => 11,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::IQ4_NL => 20,
            Self::BF16 => 30,
        }
    }

    /// (values per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 | Self::IQ4_NL => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q2_K => (QK_K, 84),
            Self::Q3_K => (QK_K, 110),
            Self::Q4_K => (QK_K, 144),
            Self::Q5_K => (QK_K, 176),
            Self::Q6_K => (QK_K, 210),
        }
    }

    /// Bytes of `n` values, or `None` when `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        let (per, bytes) = self.block();
        n.is_multiple_of(per).then(|| n / per * bytes)
    }
}

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// 6-bit scale and min `j` of a K-quant super-block (llama.cpp `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        (
            ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)) as f32,
            ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as f32,
        )
    }
}

/// Dequantises one block `b` (exactly `block().1` bytes) into `out` (exactly `block().0` values).
fn dequant_block(t: GgmlType, b: &[u8], out: &mut [f32]) {
    match t {
        GgmlType::F32 => out[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => out[0] = h(b, 0),
        GgmlType::BF16 => out[0] = half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q4_0 => {
            let d = h(b, 0);
            for j in 0..16 {
                out[j] = ((b[2 + j] & 0xF) as i32 - 8) as f32 * d;
                out[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        GgmlType::IQ4_NL => {
            let d = h(b, 0);
            for j in 0..16 {
                out[j] = d * IQ4_NL_VALUES[(b[2 + j] & 0xF) as usize] as f32;
                out[j + 16] = d * IQ4_NL_VALUES[(b[2 + j] >> 4) as usize] as f32;
            }
        }
        GgmlType::Q4_1 => {
            let (d, m) = (h(b, 0), h(b, 2));
            for j in 0..16 {
                out[j] = (b[4 + j] & 0xF) as f32 * d + m;
                out[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            // Q5_0: d, 32 high bits, 16 bytes of low nibbles, values centred on 16; Q5_1: d, a min m, the rest.
            let (d, m, at) = match t {
                GgmlType::Q5_0 => (h(b, 0), None, 2),
                _ => (h(b, 0), Some(h(b, 2)), 4),
            };
            let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            let qs = &b[at + 4..at + 20];
            for j in 0..16 {
                let x0 = (qs[j] & 0xF) as u32 | (((qh >> j) << 4) & 0x10);
                let x1 = (qs[j] >> 4) as u32 | ((qh >> (j + 12)) & 0x10);
                let value = |x: u32| match m {
                    None => (x as i32 - 16) as f32 * d,
                    Some(m) => x as f32 * d + m,
                };
                out[j] = value(x0);
                out[j + 16] = value(x1);
            }
        }
        GgmlType::Q8_0 => {
            let d = h(b, 0);
            for j in 0..32 {
                out[j] = (b[2 + j] as i8) as f32 * d;
            }
        }
        GgmlType::Q2_K => {
            // 16 sub-blocks of 16 values: a 4-bit scale and a 4-bit min each; 2-bit values, four to a byte, value
            // k in byte 32·(k / 128) + k % 32 at bit 2·(k % 128 / 32).
            let (scales, qs, d, dmin) = (&b[0..16], &b[16..80], h(b, 80), h(b, 82));
            for (k, y) in out.iter_mut().enumerate() {
                let sc = scales[k / 16];
                let q = (qs[32 * (k / 128) + k % 32] >> (2 * (k % 128 / 32))) & 3;
                *y = d * (sc & 0xF) as f32 * q as f32 - dmin * (sc >> 4) as f32;
            }
        }
        GgmlType::Q3_K => {
            // As Q2_K's values plus a high bit (set: no offset, clear: −4) at bit k / 32 of hmask[k % 32]; 16
            // signed 6-bit scales, low nibbles in bytes 0..8, high bit pairs in bytes 8..12.
            let (hmask, qs, sc, d) = (&b[0..32], &b[32..96], &b[96..108], h(b, 108));
            for (k, y) in out.iter_mut().enumerate() {
                let g = k / 16;
                let scale = ((sc[g % 8] >> (4 * (g / 8))) & 0xF)
                    | (((sc[8 + g % 4] >> (2 * (g / 4))) & 3) << 4);
                let low = (qs[32 * (k / 128) + k % 32] >> (2 * (k % 128 / 32))) & 3;
                let high = hmask[k % 32] & (1 << (k / 32)) != 0;
                let q = low as i32 - if high { 0 } else { 4 };
                *y = d * (scale as i32 - 32) as f32 * q as f32;
            }
        }
        GgmlType::Q4_K => {
            let (d, dmin) = (h(b, 0), h(b, 2));
            let (scales, qs) = (&b[4..16], &b[16..144]);
            for (k, chunk) in (0..QK_K).step_by(64).enumerate() {
                let (sc1, m1) = scale_min_k4(2 * k, scales);
                let (sc2, m2) = scale_min_k4(2 * k + 1, scales);
                let q = &qs[32 * k..32 * k + 32];
                for l in 0..32 {
                    out[chunk + l] = d * sc1 * (q[l] & 0xF) as f32 - dmin * m1;
                    out[chunk + 32 + l] = d * sc2 * (q[l] >> 4) as f32 - dmin * m2;
                }
            }
        }
        GgmlType::Q5_K => {
            let (d, dmin) = (h(b, 0), h(b, 2));
            let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
            for (k, chunk) in (0..QK_K).step_by(64).enumerate() {
                let (sc1, m1) = scale_min_k4(2 * k, scales);
                let (sc2, m2) = scale_min_k4(2 * k + 1, scales);
                let (u1, u2) = (1u8 << (2 * k), 2u8 << (2 * k));
                let q = &qs[32 * k..32 * k + 32];
                for l in 0..32 {
                    let hi1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                    let hi2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                    out[chunk + l] = d * sc1 * ((q[l] & 0xF) + hi1) as f32 - dmin * m1;
                    out[chunk + 32 + l] = d * sc2 * ((q[l] >> 4) + hi2) as f32 - dmin * m2;
                }
            }
        }
        GgmlType::Q6_K => {
            let (ql, qh, sc, d) = (&b[0..128], &b[128..192], &b[192..208], h(b, 208));
            for half in 0..2 {
                let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
                let y = &mut out[128 * half..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
        }
    }
}

/// Dequantises `bytes` (a whole number of blocks of type `t`) to f32, block by block.
pub fn dequantize(t: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let (per, size) = t.block();
    let mut out = vec![0.0f32; bytes.len() / size * per];
    for (b, o) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(per)) {
        dequant_block(t, b, o);
    }
    out
}

/// Encodes f32 values as `t` (F32, F16, BF16 or Q8_0); `values.len()` must be a multiple of the block size.
pub fn quantize(t: GgmlType, values: &[f32]) -> Vec<u8> {
    match t {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => {
            let mut out = Vec::with_capacity(values.len() / 32 * 34);
            for block in values.chunks(32) {
                // llama.cpp `quantize_row_q8_0_ref`: d = max|x| / 127, q = round(x / d).
                let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
            }
            out
        }
        other => unreachable!("prunelab does not write {other:?}"),
    }
}
