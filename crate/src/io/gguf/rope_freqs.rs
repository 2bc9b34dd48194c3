//! LLaMA-3 rotary scaling in GGUF. llama.cpp stores no scaling parameters, only the tensor `rope_freqs.weight`:
//! one factor `rᵢ` per rotary frequency, `[head_dim / 2]`, that divides it (`θᵢ = base^(−2i/d) / rᵢ`; 1 where a
//! frequency is kept). Writing derives the factors from the config, as llama.cpp's converter does; reading finds
//! a [`Llama3Scaling`] that gives the same frequencies back, so a GGUF model converts to an HF config.

use crate::error::{Error, Result};
use crate::model::config::{Llama3Scaling, RopeConfig, RopeScaling};
use crate::model::rope::inv_freq;

/// The tensor's name in GGUF (it has no HF counterpart: HF configs keep the parameters instead).
pub const NAME: &str = "rope_freqs.weight";

/// A recovered scaling within this of the stored factors (in `1/r`, relative to `max(1, 1/r)`) is taken at once.
const TIGHT: f64 = 1e-6;
/// The closest one is taken within this: the converter's f32 arithmetic puts some stored factors 2e-6 from
/// their exact values.
const LOOSE: f64 = 1e-5;
/// Recovered interpolation bands are at least this wide (`low_w / high_w`): across a thinner one the factor
/// changes so fast that transformers' f32 wavelengths would give other factors than ours.
pub const MIN_BAND: f64 = 1.01;
/// Most factors read (head_dim 65536; real models have 64 to 256).
pub const MAX_FACTORS: usize = 1 << 15;

/// The factors `[head_dim / 2]` that divide the unscaled frequencies of `rope.theta` into `rope`'s.
pub fn factors(rope: &RopeConfig, head_dim: usize) -> Vec<f32> {
    factors_of(&unscaled(rope.theta, head_dim), rope, head_dim)
}

/// [`factors`] with the unscaled frequencies `plain` already computed.
fn factors_of(plain: &[f64], rope: &RopeConfig, head_dim: usize) -> Vec<f32> {
    plain
        .iter()
        .zip(inv_freq(rope, head_dim, 0)) // LLaMA-3 frequencies: no length dependence
        .map(|(p, scaled)| (p / scaled) as f32)
        .collect()
}

/// The largest difference between `factors` and the stored ones given as `y = 1/r`, relative to `max(1, y)`.
fn distance(factors: &[f32], y: &[f64]) -> f64 {
    factors
        .iter()
        .zip(y)
        .map(|(&r, &want)| (1.0 / r as f64 - want).abs() / want.max(1.0))
        .fold(0.0, f64::max)
}

/// A LLaMA-3 scaling whose factors are `stored`, `None` when every factor is 1.
///
/// Against `x = 1/w` (the unscaled frequency over 2π), LLaMA-3 scaling's `y = 1/r` is 1 for wavelengths
/// `w < high_w = L / high`, `1/factor` for `w > low_w = L / low`, and the straight line between. The factors
/// determine `factor`, `low_w` and `high_w` only as far as wavelengths pin them ([`shapes`]), never `L`, `low`
/// and `high` themselves: `L` is taken as `low_w` when that is whole (so `low` = 1, as in every LLaMA-3.x
/// release), else 8192 or the next whole number above `low_w`. The first candidate within 1e-6 of every stored
/// factor is returned, else the closest within 1e-5, with `low` and `high` rounded to as few digits as keep it
/// as close.
pub fn scaling_from_factors(
    stored: &[f32],
    theta: f64,
    head_dim: usize,
) -> Result<Option<Llama3Scaling>> {
    let bad = |what: String| Error::Gguf(format!("{NAME}: {what}"));
    if stored.len() != head_dim / 2 || stored.len() > MAX_FACTORS {
        return Err(bad(format!(
            "{} factors for head_dim {head_dim} (expected {}, at most {MAX_FACTORS})",
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
    if stored.iter().all(|&v| v == 1.0) {
        return Ok(None);
    }
    let plain = unscaled(theta, head_dim);
    let x: Vec<f64> = plain
        .iter()
        .map(|f| f / (2.0 * std::f64::consts::PI))
        .collect();
    let y: Vec<f64> = stored.iter().map(|&v| 1.0 / v as f64).collect();
    let error = |s: &Llama3Scaling| {
        let rope = RopeConfig {
            theta,
            scaling: Some(RopeScaling::Llama3(*s)),
        };
        distance(&factors_of(&plain, &rope, head_dim), &y)
    };
    let mut closest: Option<(f64, Llama3Scaling)> = None;
    for shape in shapes(&x, &y) {
        for raw in shape.scalings() {
            let Some(s) = plainest(raw, &error) else {
                continue;
            };
            let e = error(&s);
            if e <= TIGHT {
                return Ok(Some(s));
            }
            if closest.is_none_or(|(best, _)| e < best) {
                closest = Some((e, s));
            }
        }
    }
    match closest {
        Some((e, s)) if e <= LOOSE => Ok(Some(s)),
        _ => {
            let shown: Vec<f32> = stored.iter().take(8).copied().collect();
            let more = match stored.len() > 8 {
                true => format!(" and {} more", stored.len() - 8),
                false => String::new(),
            };
            Err(bad(format!(
                "the factors {shown:?}{more} follow no LLaMA-3 rotary scaling (the only scaling read from GGUF)"
            )))
        }
    }
}

/// LLaMA-3 scaling as the factors see it: `1/r` falls from 1 at wavelength `high_w` to `1/factor` at `low_w`.
#[derive(Debug, Clone, Copy)]
struct Shape {
    factor: f64,
    low_w: f64,
    high_w: f64,
}

impl Shape {
    /// From the band's ends in `x = 1/w`.
    fn between(factor: f64, x_low: f64, x_high: f64) -> Self {
        Shape {
            factor,
            low_w: 1.0 / x_low,
            high_w: 1.0 / x_high,
        }
    }

    /// The scalings with these bounds and a whole `L`: `low_w` itself when it is whole (`low` = 1), else 8192
    /// and the next whole number above `low_w`.
    fn scalings(self) -> Vec<Llama3Scaling> {
        let whole = self.low_w.round();
        let lengths = match (self.low_w - whole).abs() <= 1e-6 * self.low_w {
            true => vec![whole],
            false => vec![8192.0, self.low_w.ceil()],
        };
        lengths
            .into_iter()
            .map(|l| Llama3Scaling {
                factor: significant(self.factor, 7),
                low_freq_factor: l / self.low_w,
                high_freq_factor: l / self.high_w,
                original_max_position_embeddings: l as usize,
            })
            .collect()
    }
}

/// Candidate shapes for the points `(x, y)`. Points at `y` = 1 are kept, those level with the longest
/// wavelength's scaled, the others interpolated (the band). The kept points must lie at `x ≥ 1/high_w`, the
/// scaled ones at `x ≤ 1/low_w`, and the band must be at least [`MIN_BAND`] wide.
/// * A band of two points or more gives a least-squares line, which meets 1 at `high_w` and the scaled level
///   at `low_w` (at the longest wavelength itself when nothing is fully scaled).
/// * A band of one point: the line through it and the scaled level that ends halfway to where the kept or
///   scaled points would stop it.
/// * No band: a step between the longest kept and the shortest scaled wavelength, at round lengths when they
///   fit, else at the thirds of the gap (in `ln w`).
fn shapes(x: &[f64], y: &[f64]) -> Vec<Shape> {
    let longest = (0..x.len())
        .min_by(|&a, &b| x[a].total_cmp(&x[b]))
        .unwrap_or(0);
    let level = y[longest];
    let factor = 1.0 / level;
    let near = |a: f64, b: f64| (a - b).abs() <= TIGHT * b.max(1.0);
    let kept = |v: f64| near(v, 1.0);
    let scaled = |v: f64| !kept(v) && near(v, level);
    // The band's room: kept points at x ≥ x_kept, scaled ones at x ≤ x_scaled.
    let x_kept = (0..x.len())
        .filter(|&i| kept(y[i]))
        .map(|i| x[i])
        .fold(f64::INFINITY, f64::min);
    let x_scaled = (0..x.len())
        .filter(|&i| scaled(y[i]))
        .map(|i| x[i])
        .fold(0.0, f64::max);
    let band: Vec<(f64, f64)> = (0..x.len())
        .filter(|&i| !kept(y[i]) && !scaled(y[i]))
        .map(|i| (x[i], y[i]))
        .collect();
    let mut out = Vec::new();
    match band.as_slice() {
        [] => {
            // Steps with x_scaled ≤ x_low < x_high ≤ x_kept: at round lengths with the releases'
            // high_w = low_w / 4 where that fits, else splitting the gap in thirds (in ln w).
            let round = std::iter::once(8192.0).chain(
                (4..=30)
                    .map(|k| (1u64 << k) as f64)
                    .filter(|&l| l != 8192.0),
            );
            for l in round {
                let x_low = 1.0 / l;
                if x_low >= x_scaled && 4.0 * x_low <= x_kept {
                    out.push(Shape::between(factor, x_low, 4.0 * x_low));
                }
            }
            let gap = x_kept / x_scaled;
            out.push(match gap.is_finite() {
                true => Shape::between(
                    factor,
                    x_scaled * gap.powf(1.0 / 3.0),
                    x_scaled * gap.powf(2.0 / 3.0),
                ),
                false => Shape::between(factor, x_scaled, 4.0 * x_scaled),
            });
        }
        &[(xb, yb)] => {
            // The line through (xb, yb) and (x_low, level) reaches 1 at x_high = xb + t·(xb − x_low).
            let t = (1.0 - yb) / (yb - level);
            let room = ((x_kept - xb) / t).min(xb - x_scaled);
            // Halfway: the widest band short of the neighbours (a narrow one reads differently in f32).
            let d = 0.5 * room;
            out.push(Shape::between(factor, xb - d, xb + t * d));
        }
        _ => {
            if let Some((slope, at_zero)) = line(&band) {
                out.push(Shape {
                    factor,
                    low_w: slope / (level - at_zero),
                    high_w: slope / (1.0 - at_zero),
                });
            }
        }
    }
    out.retain(|s| {
        [s.factor, s.low_w, s.high_w]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0)
            && s.low_w >= MIN_BAND * s.high_w
            && s.low_w <= 1e15
    });
    out
}

/// `raw` with `low` and `high` rounded to the fewest significant digits that leave it as close to the stored
/// factors (within 2e-7 more): 4 rather than 4.0000013. `None` if it is not a valid scaling.
fn plainest(raw: Llama3Scaling, error: &dyn Fn(&Llama3Scaling) -> f64) -> Option<Llama3Scaling> {
    if !raw.is_valid() {
        return None;
    }
    let budget = error(&raw) + 2e-7;
    (1..=7)
        .map(|digits| Llama3Scaling {
            low_freq_factor: significant(raw.low_freq_factor, digits),
            high_freq_factor: significant(raw.high_freq_factor, digits),
            ..raw
        })
        .find(|s| s.is_valid() && error(s) <= budget)
        .or(Some(raw))
}

/// Unscaled inverse frequencies `[head_dim / 2]` of base `theta`.
fn unscaled(theta: f64, head_dim: usize) -> Vec<f64> {
    inv_freq(&RopeConfig::plain(theta), head_dim, 0)
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
