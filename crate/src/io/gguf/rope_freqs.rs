//! LLaMA-3 rotary scaling in GGUF. llama.cpp stores no scaling parameters, only the tensor `rope_freqs.weight`:
//! one factor `rᵢ` per rotary frequency, `[head_dim / 2]`, that divides it (`θᵢ = base^(−2i/d) / rᵢ`; 1 where a
//! frequency is kept). Writing derives the factors from the config, as llama.cpp's converter does; reading finds
//! the [`Llama3Scaling`] that gives the same frequencies back, so a GGUF model converts to an HF config.

use crate::error::{Error, Result};
use crate::model::config::{Llama3Scaling, RopeConfig};
use crate::model::rope::inv_freq;

/// The tensor's name in GGUF (it has no HF counterpart: HF configs keep the parameters instead).
pub const NAME: &str = "rope_freqs.weight";

/// Largest relative difference between the stored factors and those of the scaling recovered from them: f32
/// storage and the converter's f32 frequencies put them up to 2e-7 from ours.
const TOLERANCE: f64 = 1e-6;

/// The factors `[head_dim / 2]` that divide the unscaled frequencies of `rope.theta` into `rope`'s.
pub fn factors(rope: &RopeConfig, head_dim: usize) -> Vec<f32> {
    let plain = unscaled(rope.theta, head_dim);
    plain
        .iter()
        .zip(inv_freq(rope, head_dim))
        .map(|(p, scaled)| (p / scaled) as f32)
        .collect()
}

/// The LLaMA-3 scaling whose factors are `stored` (within 1e-6 relative), `None` when every factor is 1.
///
/// LLaMA-3 scaling keeps frequencies of wavelength `w < L / high`, divides those with `w > L / low` by
/// `factor` and interpolates in between with `s = (L/w − low) / (high − low)`. Multiplying `L`, `low` and `high`
/// by one constant changes no frequency, so `low` is taken as 1 (as in every LLaMA-3.x release): `factor` is
/// the extreme factor, and `L` and `high` follow from the interpolated band ([`lengths_and_highs`]): the first
/// candidate that reproduces every factor, with `high` rounded to as few digits as still do.
pub fn scaling_from_factors(
    stored: &[f32],
    theta: f64,
    head_dim: usize,
) -> Result<Option<Llama3Scaling>> {
    let bad = |what: String| Error::Gguf(format!("{NAME}: {what}"));
    if stored.len() != head_dim / 2 {
        return Err(bad(format!(
            "{} factors for head_dim {head_dim} (expected {})",
            stored.len(),
            head_dim / 2
        )));
    }
    if let Some((i, v)) = stored
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v > 0.0))
    {
        return Err(bad(format!("factor {i} is {v}, not a finite number > 0")));
    }
    let r: Vec<f64> = stored.iter().map(|&v| v as f64).collect();
    if r.iter().all(|&v| v == 1.0) {
        return Ok(None);
    }
    let wavelen: Vec<f64> = unscaled(theta, head_dim)
        .iter()
        .map(|f| 2.0 * std::f64::consts::PI / f)
        .collect();
    let factor = significant(
        r.iter()
            .copied()
            .fold(1.0, |m, v| if v.ln().abs() > m.ln().abs() { v } else { m }),
        7,
    );
    let near = |a: f64, b: f64| (a - b).abs() <= TOLERANCE * b.abs();
    // The interpolated band: (1/w, s) with s from r = 1 / ((1 − s) / factor + s).
    let band: Vec<(f64, f64)> = r
        .iter()
        .zip(&wavelen)
        .filter(|(v, _)| !near(**v, 1.0) && !near(**v, factor))
        .map(|(v, w)| (1.0 / w, (1.0 / v - 1.0 / factor) / (1.0 - 1.0 / factor)))
        .collect();
    let kept: Vec<f64> = (0..r.len())
        .filter(|&i| near(r[i], 1.0))
        .map(|i| wavelen[i])
        .collect();
    let scaled: Vec<f64> = (0..r.len())
        .filter(|&i| near(r[i], factor))
        .map(|i| wavelen[i])
        .collect();
    let candidates = lengths_and_highs(&band, &kept, &scaled);
    candidates
        .into_iter()
        .filter(|(l, high)| l.is_finite() && *l >= 1.0 && high.is_finite() && *high > 1.0)
        .flat_map(|(l, high)| {
            // The plainest `high` first: 4 rather than the fit's 4.0000013.
            (1..=7).map(move |digits| Llama3Scaling {
                factor,
                low_freq_factor: 1.0,
                high_freq_factor: significant(high, digits),
                original_max_position_embeddings: l.round() as usize,
            })
        })
        .find(|&s| {
            let rope = RopeConfig {
                theta,
                llama3: Some(s),
            };
            s.high_freq_factor > 1.0
                && factors(&rope, head_dim)
                    .iter()
                    .zip(&r)
                    .all(|(&got, &want)| near(got as f64, want))
        })
        .map(Some)
        .ok_or_else(|| {
            bad(format!(
                "the factors {stored:?} follow no LLaMA-3 rotary scaling (the only scaling read from GGUF)"
            ))
        })
}

/// Candidate `(L, high)` pairs (with `low` = 1) for an interpolated band of `(1/w, s)` points between kept and
/// scaled wavelengths: the least-squares line through a band of two points or more; else, for `L` = 8192, the
/// powers of two, the shortest `L` a band of one point allows (`L / high` grows as `L` shrinks towards it) and
/// the longest below the first scaled wavelength, the `high` that puts the band point (or no point) in the band.
fn lengths_and_highs(band: &[(f64, f64)], kept: &[f64], scaled: &[f64]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    if let Some((slope, intercept)) = line(band) {
        // s = L/(high − 1) · (1/w) − 1/(high − 1)
        out.push((-slope / intercept, 1.0 - 1.0 / intercept));
    }
    let longest_kept = kept.iter().copied().fold(0.0, f64::max);
    let shortest_scaled = scaled.iter().copied().fold(f64::INFINITY, f64::min);
    let lengths = std::iter::once(8192.0)
        .chain((4..=30).map(|k| (1u64 << k) as f64))
        .chain(band.first().map(|&(inv_w, _)| (1.0 / inv_w).ceil()))
        .chain([shortest_scaled.ceil() - 1.0]);
    for l in lengths {
        let high = match band.first() {
            Some(&(inv_w, s)) if s > 0.0 => 1.0 + (l * inv_w - 1.0) / s,
            Some(_) => continue,
            None if l / 4.0 > longest_kept => 4.0,
            None => 0.5 * (1.0 + l / longest_kept),
        };
        out.push((l, high));
    }
    out
}

/// Unscaled inverse frequencies `[head_dim / 2]` of base `theta`.
fn unscaled(theta: f64, head_dim: usize) -> Vec<f64> {
    inv_freq(
        &RopeConfig {
            theta,
            llama3: None,
        },
        head_dim,
    )
}

/// The least-squares line `y = a·x + b` through two points or more (`None` for fewer, or equal `x`).
fn line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    (sxx > 0.0).then(|| (sxy / sxx, my - sxy / sxx * mx))
}

/// `x` rounded to `digits` significant digits (7 is an f32's worth: 1.2999999523 is written back as 1.3).
fn significant(x: f64, digits: usize) -> f64 {
    format!("{x:.*e}", digits - 1).parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama3(factor: f64, high: f64, l: usize) -> Llama3Scaling {
        Llama3Scaling {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: high,
            original_max_position_embeddings: l,
        }
    }

    #[test]
    fn release_parameters_come_back_exactly() {
        for (theta, d, s) in [
            (500000.0, 128, llama3(8.0, 4.0, 8192)),
            (500000.0, 64, llama3(32.0, 4.0, 8192)),
            (10000.0, 64, llama3(4.0, 2.0, 2048)),
            (10000.0, 64, llama3(1.3, 2.5, 4096)),
        ] {
            let rope = RopeConfig {
                theta,
                llama3: Some(s),
            };
            let back = scaling_from_factors(&factors(&rope, d), theta, d).unwrap();
            assert_eq!(back, Some(s), "theta {theta}, head_dim {d}");
        }
    }

    #[test]
    fn a_band_of_one_or_no_frequency_gives_the_same_frequencies() {
        // head_dim 16, theta 1e5: wavelengths 6.3, 26.5, 112, 471, 1987, 8380, 3.5e4, 1.5e5. Scalings with
        // one frequency (112 or 1987) or none between L / high and L.
        for s in [
            llama3(1.5, 3.0, 300),
            llama3(8.0, 4.0, 2000),
            llama3(8.0, 1.5, 1000),
        ] {
            let rope = RopeConfig {
                theta: 1e5,
                llama3: Some(s),
            };
            let stored = factors(&rope, 16);
            let back = scaling_from_factors(&stored, 1e5, 16).unwrap().unwrap();
            let again = RopeConfig {
                theta: 1e5,
                llama3: Some(back),
            };
            for (a, b) in factors(&again, 16).iter().zip(&stored) {
                assert!((a - b).abs() <= 1e-6 * b, "{s:?} → {back:?}: {a} vs {b}");
            }
        }
        let none = RopeConfig {
            theta: 1e5,
            llama3: None,
        };
        assert_eq!(
            scaling_from_factors(&factors(&none, 16), 1e5, 16).unwrap(),
            None
        );
    }

    #[test]
    fn factors_no_llama3_scaling_gives_are_refused() {
        let err = |v: &[f32]| scaling_from_factors(v, 1e5, 16).unwrap_err().to_string();
        assert!(err(&[1.0; 7]).contains("7 factors for head_dim 16 (expected 8)"));
        let mut nan = [1.0f32; 8];
        nan[3] = f32::NAN;
        assert!(err(&nan).contains("factor 3 is NaN, not a finite number > 0"));
        // Not monotone in the wavelength: no band of LLaMA-3 scaling looks like this.
        let e = err(&[1.0, 8.0, 1.0, 8.0, 8.0, 8.0, 8.0, 8.0]);
        assert!(e.contains("follow no LLaMA-3 rotary scaling"), "{e}");
        let e = err(&[1.0, 1.0, 2.0, 3.0, 7.0, 5.0, 8.0, 8.0]);
        assert!(e.contains("follow no LLaMA-3 rotary scaling"), "{e}");
    }
}
