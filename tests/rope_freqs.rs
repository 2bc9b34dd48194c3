//! LLaMA-3 rotary scaling as GGUF's `rope_freqs` factors: the factors of every scaling on a grid (and of the
//! releases) read back as a scaling that gives the same frequencies, in prunelab and in transformers' float32
//! arithmetic; factors with the converter's rounding are read; factors no scaling gives are refused by name.

mod common;

use common::llama3;
use prunelab::io::gguf::rope_freqs::{factors, scaling_from_factors, MAX_FACTORS, MIN_BAND};
use prunelab::model::config::{Llama3Scaling, RopeConfig, RopeScaling};

/// The largest difference between two sets of factors, in `1/r` relative to `max(1, 1/r)`.
fn gap(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let (x, y) = (1.0 / x as f64, 1.0 / y as f64);
            (x - y).abs() / y.max(1.0)
        })
        .fold(0.0, f64::max)
}

/// The factors transformers computes for `s` in float32 (`_compute_llama3_parameters`).
fn transformers_f32(theta: f64, d: usize, s: &Llama3Scaling) -> Vec<f32> {
    let (l, low, high, factor) = (
        s.original_max_position_embeddings as f32,
        s.low_freq_factor as f32,
        s.high_freq_factor as f32,
        s.factor as f32,
    );
    (0..d / 2)
        .map(|i| {
            let base = 1.0 / (theta as f32).powf((2 * i) as f32 / d as f32);
            let w = 2.0 * std::f32::consts::PI / base;
            let scaled = if w > l / low { base / factor } else { base };
            let smooth = (l / w - low) / (high - low);
            let medium = w >= l / high && w <= l / low; // transformers: ~(w < high_w) * ~(w > low_w)
            let out = match medium {
                true => (1.0 - smooth) * scaled / factor + smooth * scaled,
                false => scaled,
            };
            base / out
        })
        .collect()
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
            scaling: Some(RopeScaling::Llama3(s)),
        };
        let back = scaling_from_factors(&factors(&rope, d), theta, d).unwrap();
        assert_eq!(back, Some(s), "theta {theta}, head_dim {d}");
    }
}

#[test]
fn every_scaling_on_a_grid_gives_its_frequencies_back_in_transformers_too() {
    // Bands of no, one and many frequencies, low ≠ 1, factors below 1, lengths beyond every wavelength
    // (nothing fully scaled) and below the shortest ones; theta below 1 turns the order of wavelengths.
    let mut cases = 0;
    for theta in [0.5, 1e4, 1e5, 5e5, 1e6] {
        for d in [16, 32, 64, 128] {
            for factor in [0.5, 2.0, 8.0, 32.0] {
                for low in [1.0, 1.5, 3.0] {
                    for high in [2.0, 4.0, 8.0] {
                        for l in [4, 13, 40, 300, 1061, 2048, 8192, 37768, 65536, 143880] {
                            let s = Llama3Scaling {
                                factor,
                                low_freq_factor: low,
                                high_freq_factor: high,
                                original_max_position_embeddings: l,
                            };
                            if !s.is_valid() {
                                continue;
                            }
                            let stored = factors(
                                &RopeConfig {
                                    theta,
                                    scaling: Some(RopeScaling::Llama3(s)),
                                },
                                d,
                            );
                            let back = scaling_from_factors(&stored, theta, d)
                                .unwrap_or_else(|e| panic!("{s:?}, theta {theta}, d {d}: {e}"));
                            let again = RopeConfig {
                                theta,
                                scaling: back.map(RopeScaling::Llama3),
                            };
                            let g = gap(&factors(&again, d), &stored);
                            assert!(g <= 1e-6, "{s:?}, theta {theta}, d {d} → {back:?}: {g}");
                            // transformers, in f32, reads the recovered config as the original.
                            if let Some(b) = back {
                                let hf = gap(
                                    &transformers_f32(theta, d, &b),
                                    &transformers_f32(theta, d, &s),
                                );
                                assert!(hf <= 1e-5, "{s:?}, theta {theta}, d {d} → {b:?}: {hf}");
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 6400);
}

#[test]
fn one_interpolated_frequency_gets_a_band_transformers_reads_alike() {
    // Found in review: these were refused (L 40, 1061) or recovered with a band 1e-7 wide that transformers'
    // f32 wavelengths read as other factors (L 32768, 65536).
    for (theta, s) in [
        (
            1e4,
            Llama3Scaling {
                low_freq_factor: 1.5,
                ..llama3(8.0, 2.0, 40)
            },
        ),
        (
            1e4,
            Llama3Scaling {
                low_freq_factor: 3.0,
                ..llama3(8.0, 4.0, 1061)
            },
        ),
        (
            1e5,
            Llama3Scaling {
                low_freq_factor: 1.5,
                ..llama3(32.0, 2.0, 32768)
            },
        ),
        (1e4, llama3(32.0, 2.0, 65536)),
    ] {
        let stored = factors(
            &RopeConfig {
                theta,
                scaling: Some(RopeScaling::Llama3(s)),
            },
            64,
        );
        let back = scaling_from_factors(&stored, theta, 64).unwrap().unwrap();
        assert!(
            back.low_freq_factor * MIN_BAND <= back.high_freq_factor,
            "{back:?}"
        );
        let hf = gap(
            &transformers_f32(theta, 64, &back),
            &transformers_f32(theta, 64, &s),
        );
        assert!(hf <= 1e-5, "{s:?} → {back:?}: {hf}");
    }
}

#[test]
fn factors_off_by_the_converters_rounding_are_read() {
    // llama.cpp's converter computes in f32: factors near L / low come out up to 2e-6 from exact.
    let s = llama3(32.0, 2.0, 4096);
    let rope = RopeConfig {
        theta: 1e6,
        scaling: Some(RopeScaling::Llama3(s)),
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
        scaling: Some(RopeScaling::Llama3(back)),
    };
    assert!(gap(&factors(&again, 128), &exact) <= 1e-5, "{back:?}");
}

#[test]
fn factors_no_llama3_scaling_gives_are_refused() {
    let err = |v: &[f32]| scaling_from_factors(v, 1e5, 16).unwrap_err().to_string();
    assert!(err(&[1.0; 7]).contains("7 factors for head_dim 16 (expected 8, at most 32768)"));
    let mut nan = [1.0f32; 8];
    nan[3] = f32::NAN;
    assert!(err(&nan).contains("factor 3 is NaN, not a finite number > 0"));
    // Not monotone in the wavelength: no band of LLaMA-3 scaling looks like this.
    let e = err(&[1.0, 8.0, 1.0, 8.0, 8.0, 8.0, 8.0, 8.0]);
    assert!(e.contains("follow no LLaMA-3 rotary scaling"), "{e}");
    let e = err(&[1.0, 1.0, 2.0, 3.0, 7.0, 5.0, 8.0, 8.0]);
    assert!(e.contains("follow no LLaMA-3 rotary scaling"), "{e}");
    // More factors than any real model has are refused before any work.
    let huge = vec![1.0f32; MAX_FACTORS + 1];
    let e = scaling_from_factors(&huge, 1e5, 2 * MAX_FACTORS + 2)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("32769 factors for head_dim 65538 (expected 32769, at most 32768)"),
        "{e}"
    );
    // Long tensors are shown by their first eight factors.
    let mut long = vec![1.0f32; 64];
    long[10] = 3.0;
    let e = scaling_from_factors(&long, 1e5, 128)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1.0, 1.0, 1.0] and 56 more follow no"), "{e}");
}
