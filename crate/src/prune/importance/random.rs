//! `random`: a seeded uniform draw per structure (a baseline every method should beat).

use rand::{Rng, SeedableRng};

/// `n` scores in [0, 1) for layer `layer` and structure family `salt`, reproducible from `seed`.
pub fn scores(seed: u64, layer: usize, salt: u64, n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ ((layer as u64) << 32) ^ salt);
    (0..n).map(|_| rng.random::<f32>()).collect()
}
