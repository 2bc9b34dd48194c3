//! LLaMA-3 rotary scaling in GGUF. llama.cpp stores no scaling parameters, only the tensor `rope_freqs.weight`:
//! one factor `rᵢ` per rotary frequency, `[head_dim / 2]`, that divides it (`θᵢ = base^(−2i/d) / rᵢ`; 1 where a
//! frequency is kept). Writing derives the factors from the config, as llama.cpp's converter does; reading finds
//! a [`Llama3Scaling`] that gives the same frequencies back, so a GGUF model converts to an HF config.

use crate::error::{Error, Result};
use crate::model::config::{Llama3Scaling, RopeConfig};
use crate::model::rope::inv_freq;

/// The tensor's name in GGUF (it has no HF counterpart: HF configs keep the parameters instead).
pub const NAME: &str = "rope_freqs.weight";

/// A recovered scaling within this of the stored factors (in `1/r`, relative to `max(1, 1/r)`) is taken at once.
const TIGHT: f64 = 1e-6;
/// The closest one is taken within this: the converter's f32 arithmetic puts some stored factors 2e-6 from
/// their exact values.
const LOOSE: f64 = 1e-5;

/// The factors `[head_dim / 2]` that divide the unscaled frequencies of `rope.theta` into `rope`'s.
pub fn factors(rope: &RopeConfig, head_dim: usize) -> Vec<f32> {
    let plain = unscaled(rope.theta, head_dim);
    plain
        .iter()
        .zip(inv_freq(rope, head_dim))
        .map(|(p, scaled)| (p / scaled) as f32)
        .collect()
}

/// A LLaMA-3 scaling whose factors are `stored`, `None` when every factor is 1.
///
/// Against `x = 1/w` (the unscaled frequency over 2π), LLaMA-3 scaling's `y = 1/r` is 1 for wavelengths
/// `w < high_w = L / high`, `1/factor` for `w > low_w = L / low`, and the straight line between. The factors
/// fix `factor`, `low_w` and `high_w` (where wavelengths bound them), not `L`, `low` and `high` themselves:
/// `L` is taken as `low_w` when that is whole (so `low` = 1, as in every LLaMA-3.x release), else 8192.
/// Candidates come from [`shapes`]; the first within 1e-6 of every stored factor is returned, else the closest
/// within 1e-5, with `low` and `high` rounded to as few digits as keep it as close.
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
    if stored.iter().all(|&v| v == 1.0) {
        return Ok(None);
    }
    let x: Vec<f64> = unscaled(theta, head_dim)
        .iter()
        .map(|f| f / (2.0 * std::f64::consts::PI))
        .collect();
    let y: Vec<f64> = stored.iter().map(|&v| 1.0 / v as f64).collect();
    let error = |s: &Llama3Scaling| -> f64 {
        let rope = RopeConfig {
            theta,
            llama3: Some(*s),
        };
        factors(&rope, head_dim)
            .iter()
            .zip(&y)
            .map(|(&r, &want)| (1.0 / r as f64 - want).abs() / want.max(1.0))
            .fold(0.0, f64::max)
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

/// Candidate shapes for the points `(x, y)` (`x` falling with the index): points at `y` = 1 are kept, those
/// level with the last point scaled, the others interpolated (the band).
/// * A band of two points or more gives a least-squares line: it meets 1 at `high_w` and the scaled level at
///   `low_w` — or, when nothing is fully scaled, `low_w` lies beyond every wavelength (8192 or a power of two)
///   and the line gives the factor there.
/// * A band of one point: lines through it and the scaled level at `low_w` = 8192, a power of two, the band's
///   own wavelength (the shortest allowed, which puts `high_w` farthest from the kept frequencies) or the
///   shortest scaled one (where the line may end).
/// * No band: a step between the longest kept and the shortest scaled wavelength.
fn shapes(x: &[f64], y: &[f64]) -> Vec<Shape> {
    let level = y[y.len() - 1];
    let near = |a: f64, b: f64| (a - b).abs() <= TIGHT * b.max(1.0);
    let wavelengths = |keep: &dyn Fn(f64) -> bool| -> Vec<f64> {
        x.iter()
            .zip(y)
            .filter(|(_, &v)| keep(v))
            .map(|(&u, _)| 1.0 / u)
            .collect()
    };
    let longest_kept = wavelengths(&|v| near(v, 1.0))
        .into_iter()
        .fold(0.0, f64::max);
    let shortest_scaled = wavelengths(&|v| !near(v, 1.0) && near(v, level))
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    let band: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .filter(|(_, &v)| !near(v, 1.0) && !near(v, level))
        .map(|(&u, &v)| (u, v))
        .collect();
    let round = std::iter::once(8192.0).chain((4..=30).map(|k| (1u64 << k) as f64));
    let factor = 1.0 / level;
    let mut out = Vec::new();
    match band.as_slice() {
        [] => {
            for low_w in round.chain([shortest_scaled]) {
                let high_w = match low_w / 4.0 > longest_kept {
                    true => low_w / 4.0,
                    false => 0.5 * (low_w + longest_kept),
                };
                out.push(Shape {
                    factor,
                    low_w,
                    high_w,
                });
            }
        }
        &[(xb, yb)] => {
            for low_w in round.chain([(1.0 / xb).ceil(), shortest_scaled]) {
                let slope = (yb - level) / (xb - 1.0 / low_w);
                out.push(Shape {
                    factor,
                    low_w,
                    high_w: 1.0 / (xb + (1.0 - yb) / slope),
                });
            }
        }
        _ => {
            if let Some((slope, at_zero)) = line(&band) {
                let high_w = slope / (1.0 - at_zero);
                out.push(Shape {
                    factor,
                    low_w: slope / (level - at_zero),
                    high_w,
                });
                let longest = 1.0 / x[x.len() - 1];
                for low_w in round.filter(|&w| w > longest) {
                    out.push(Shape {
                        factor: 1.0 / (at_zero + slope / low_w),
                        low_w,
                        high_w,
                    });
                }
            }
        }
    }
    out.retain(|s| {
        [s.factor, s.low_w, s.high_w]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0)
            && s.high_w < s.low_w
            && s.low_w <= 1e15
    });
    out
}

/// `raw` with `low` and `high` rounded to the fewest significant digits that leave it as close to the stored
/// factors (within 2e-7 more): 4 rather than 4.0000013. `None` if it is not a valid scaling.
fn plainest(raw: Llama3Scaling, error: &dyn Fn(&Llama3Scaling) -> f64) -> Option<Llama3Scaling> {
    let valid = |s: &Llama3Scaling| {
        s.factor > 0.0
            && s.low_freq_factor > 0.0
            && s.high_freq_factor > s.low_freq_factor
            && s.high_freq_factor.is_finite()
            && s.original_max_position_embeddings > 0
    };
    if !valid(&raw) {
        return None;
    }
    let budget = error(&raw) + 2e-7;
    (1..=7)
        .map(|digits| Llama3Scaling {
            low_freq_factor: significant(raw.low_freq_factor, digits),
            high_freq_factor: significant(raw.high_freq_factor, digits),
            ..raw
        })
        .find(|s| valid(s) && error(s) <= budget)
        .or(Some(raw))
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

    /// The largest difference between two sets of factors, in `1/r` relative to `max(1, 1/r)`.
    fn gap(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&a, &b)| {
                let (a, b) = (1.0 / a as f64, 1.0 / b as f64);
                (a - b).abs() / b.max(1.0)
            })
            .fold(0.0, f64::max)
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
    fn every_scaling_on_a_grid_gives_its_frequencies_back() {
        // Bands of no, one and many frequencies, low ≠ 1, factors below 1, and lengths beyond every
        // wavelength (nothing fully scaled).
        let mut cases = 0;
        for theta in [1e4, 1e5, 5e5, 1e6] {
            for d in [16, 32, 64, 128] {
                for factor in [0.5, 2.0, 8.0, 32.0] {
                    for low in [1.0, 1.5] {
                        for high in [2.0, 4.0, 8.0] {
                            for l in [300, 2048, 8192, 37768, 143880] {
                                let s = Llama3Scaling {
                                    factor,
                                    low_freq_factor: low,
                                    high_freq_factor: high,
                                    original_max_position_embeddings: l,
                                };
                                let stored = factors(
                                    &RopeConfig {
                                        theta,
                                        llama3: Some(s),
                                    },
                                    d,
                                );
                                let back = scaling_from_factors(&stored, theta, d)
                                    .unwrap_or_else(|e| panic!("{s:?}, theta {theta}, d {d}: {e}"));
                                let again = RopeConfig {
                                    theta,
                                    llama3: back,
                                };
                                let g = gap(&factors(&again, d), &stored);
                                assert!(g <= 1e-6, "{s:?}, theta {theta}, d {d} → {back:?}: {g}");
                                cases += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 1920);
    }

    #[test]
    fn factors_off_by_the_converters_rounding_are_read() {
        // llama.cpp's converter computes in f32: factors near L / low come out up to 2e-6 from exact.
        let s = llama3(32.0, 2.0, 4096);
        let rope = RopeConfig {
            theta: 1e6,
            llama3: Some(s),
        };
        let exact = factors(&rope, 128);
        let noisy: Vec<f32> = exact
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                if r != 1.0 && r != 32.0 {
                    r * (1.0 + 2e-6 * (i % 3) as f32)
                } else {
                    r
                }
            })
            .collect();
        let back = scaling_from_factors(&noisy, 1e6, 128).unwrap().unwrap();
        let again = RopeConfig {
            theta: 1e6,
            llama3: Some(back),
        };
        assert!(gap(&factors(&again, 128), &exact) <= 1e-5, "{back:?}");
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
        // Long tensors are shown by their first eight factors.
        let mut long = vec![1.0f32; 64];
        long[10] = 3.0;
        let e = scaling_from_factors(&long, 1e5, 128)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1.0, 1.0, 1.0] and 56 more follow no"), "{e}");
    }
}
