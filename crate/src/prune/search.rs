//! The `search` allocation (Search for Efficient LLMs; methods.md §3): an evolutionary search over how many
//! structures each layer of the range loses, at a parameter target.
//!
//! A candidate is one [`Counts`] per layer; its plan removes each layer's lowest-scored structures, from scores
//! computed once for every candidate. Its fitness is the calibration loss (mean next-token NLL) of the model it
//! leaves, unrepaired, on the first `fitness_windows` calibration windows; the run's compensation repairs only
//! the winner. The search starts from the uniform allocation and its mutations; each generation keeps the
//! better half and breeds the rest from it (per-layer crossover, then mutation). A mutation moves a few layers'
//! counts (MLP channels by up to a sixteenth of the width, KV groups and query heads by one) and keeps at least
//! 80% of the parent's removed structures; a candidate is then brought to the budget (removing more from random
//! layers while it keeps too many parameters, giving back while it removes more than needed) and dropped when it
//! cannot be. The uniform candidate stays in the population until a better one replaces it, so the winner's
//! fitness is never worse than uniform's.

use std::collections::HashMap;
use std::ops::Range;

use burn::tensor::backend::Backend;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::allocate::{ratio_for_target, shrunk, Allocation, Counts};
use super::calib::check_windows;
use super::fitness::Fitness;
use super::importance::LayerScores;
use super::plan::Plan;
use super::structure::StructureKind;
use crate::error::{Error, Result};
use crate::model::params::count_params;
use crate::model::tensors::{tensor_specs, Module};
use crate::model::{Llama, ModelConfig};
use crate::progress::{checkpoint, Progress, ProgressEvent};

/// How hard the search looks (recipe `allocation: {"kind": "search", …}`; every field has a default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchSettings {
    /// Candidates per generation.
    pub population: usize,
    /// Generations bred after the first.
    pub generations: usize,
    /// Calibration windows the fitness is measured on (the first ones).
    pub fitness_windows: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            population: 12,
            generations: 6,
            fitness_windows: 4,
        }
    }
}

impl SearchSettings {
    /// The largest population: each candidate costs a forward over the fitness windows.
    pub const MAX_POPULATION: usize = 1024;

    /// Refuses settings that cannot search.
    pub fn check(&self) -> Result<()> {
        if self.population < 2 || self.generations == 0 || self.fitness_windows == 0 {
            return Err(Error::Invalid(format!(
                "search needs a population of at least 2, at least 1 generation and 1 fitness window \
                 (got {}, {} and {})",
                self.population, self.generations, self.fitness_windows
            )));
        }
        if self.population > Self::MAX_POPULATION {
            return Err(Error::Invalid(format!(
                "search breeds at most {} candidates per generation (got a population of {})",
                Self::MAX_POPULATION,
                self.population
            )));
        }
        Ok(())
    }
}

/// A candidate: what each scored layer loses, in the order of the scores.
type Genome = Vec<Counts>;

/// The search's result: the winner's plan and how the search went.
#[derive(Debug, Clone)]
pub struct Searched {
    pub plan: Plan,
    pub record: SearchRecord,
}

/// How a search went (the report's `search`): the fitness (calibration loss on the fitness windows, unrepaired)
/// of the uniform start and of the best candidate after each generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchRecord {
    pub uniform_loss: f64,
    /// The best loss after the first generation and after each one bred, `[generations + 1]`.
    pub best_loss: Vec<f64>,
    /// Distinct candidates whose loss was measured (each one forward over the fitness windows).
    pub candidates: usize,
}

/// The budget and the room of one search: the model's shapes, the scored layers, the kinds pruned.
struct Space<'a> {
    cfg: &'a ModelConfig,
    scores: &'a [LayerScores],
    kinds: &'a [StructureKind],
    /// Parameters that must go.
    need: usize,
    total: usize,
}

impl Space<'_> {
    fn removed(&self, g: &Genome) -> usize {
        let layers: Vec<_> = self
            .scores
            .iter()
            .map(|s| s.layer)
            .zip(g.iter().copied())
            .collect();
        self.total - count_params(&shrunk(self.cfg, &layers)).total
    }

    /// The most a layer can lose of each kind pruned: all but one KV group, one head per group, one channel.
    fn room(&self, slot: usize) -> Counts {
        let s = &self.cfg.layers[self.scores[slot].layer];
        let when = |k: StructureKind, n: usize| match self.kinds.contains(&k) {
            true => n.saturating_sub(1),
            false => 0,
        };
        Counts {
            kv_groups: when(StructureKind::KvGroups, s.num_kv_heads),
            query_heads_per_group: when(StructureKind::QueryHeads, s.n_rep()),
            mlp_channels: when(StructureKind::Mlp, s.intermediate_size),
        }
    }

    fn plan(&self, g: &Genome) -> Plan {
        let layers = self
            .scores
            .iter()
            .zip(g)
            .map(|(s, c)| c.lowest_of(s, &self.cfg.layers[s.layer]))
            .collect();
        Plan::new(self.cfg, layers)
    }

    /// Moves a few layers' counts: MLP channels by up to a sixteenth of the width, KV groups and query heads by
    /// one, within each layer's room.
    fn mutate(&self, g: &Genome, rng: &mut StdRng) -> Genome {
        let mut child = g.clone();
        let moves = (g.len() / 5).max(1);
        for _ in 0..moves {
            let slot = rng.random_range(0..g.len());
            let (room, c) = (self.room(slot), &mut child[slot]);
            let step = (room.mlp_channels / 16).max(1) as i64;
            let nudge =
                |v: usize, max: usize, by: i64| (v as i64 + by).clamp(0, max as i64) as usize;
            c.mlp_channels = nudge(
                c.mlp_channels,
                room.mlp_channels,
                rng.random_range(-step..=step),
            );
            if rng.random_bool(0.25) {
                c.kv_groups = nudge(c.kv_groups, room.kv_groups, rng.random_range(-1..=1));
            }
            if rng.random_bool(0.25) {
                let by = rng.random_range(-1..=1);
                c.query_heads_per_group =
                    nudge(c.query_heads_per_group, room.query_heads_per_group, by);
            }
        }
        child
    }

    /// Brings `g` to the budget: more removed from random layers while too many parameters stay, then given back
    /// while more than needed go; `None` when no layer has room left.
    fn repair(&self, mut g: Genome, rng: &mut StdRng) -> Option<Genome> {
        let mut removed = self.removed(&g);
        while removed < self.need {
            let open: Vec<usize> = (0..g.len()).filter(|&i| g[i] != self.room(i)).collect();
            let slot = *open.get(rng.random_range(0..open.len().max(1)))?;
            let (room, c) = (self.room(slot), &mut g[slot]);
            match (
                c.mlp_channels < room.mlp_channels,
                c.kv_groups < room.kv_groups,
            ) {
                (true, _) => {
                    let per = 3 * self.cfg.hidden_size;
                    let want = (self.need - removed).div_ceil(per).max(1);
                    c.mlp_channels = (c.mlp_channels + want).min(room.mlp_channels);
                }
                (false, true) => c.kv_groups += 1,
                _ => c.query_heads_per_group += 1,
            }
            removed = self.removed(&g);
        }
        // Give back: each try returns channels (or a group or head rank) to a random layer if the budget holds.
        for _ in 0..4 * g.len() {
            let slot = rng.random_range(0..g.len());
            let before = g[slot];
            let c = &mut g[slot];
            let per = 3 * self.cfg.hidden_size;
            match (
                c.mlp_channels > 0,
                c.kv_groups > 0,
                c.query_heads_per_group > 0,
            ) {
                (true, _, _) => {
                    c.mlp_channels -= ((removed - self.need) / per).clamp(1, c.mlp_channels)
                }
                (_, true, _) => c.kv_groups -= 1,
                (_, _, true) => c.query_heads_per_group -= 1,
                _ => continue,
            }
            match self.removed(&g) {
                r if r >= self.need => removed = r,
                _ => g[slot] = before,
            }
        }
        Some(g)
    }
}

/// The share of `parent`'s removed structures that `child` removes too (1 when the parent removes nothing).
fn overlap(parent: &Genome, child: &Genome) -> f64 {
    let sum = |f: &dyn Fn(&Counts, &Counts) -> usize| -> usize {
        parent.iter().zip(child).map(|(p, c)| f(p, c)).sum()
    };
    let kept = sum(&|p, c| {
        p.kv_groups.min(c.kv_groups)
            + p.query_heads_per_group.min(c.query_heads_per_group)
            + p.mlp_channels.min(c.mlp_channels)
    });
    let all = sum(&|p, _| p.kv_groups + p.query_heads_per_group + p.mlp_channels);
    match all {
        0 => 1.0,
        n => kept as f64 / n as f64,
    }
}

/// A mutation of `parent` that keeps at least 80% of its removals, brought to the budget (tried a few times;
/// `None` when none holds).
fn offspring(space: &Space, parent: &Genome, rng: &mut StdRng) -> Option<Genome> {
    (0..16).find_map(|_| {
        let child = space.repair(space.mutate(parent, rng), rng)?;
        (overlap(parent, &child) >= 0.8).then_some(child)
    })
}

/// Parameters of the pruned copy the uniform candidate (the first every search measures) holds beside the model
/// while its loss is measured: of each layer in `layers` it changes, at their pruned sizes, the attention
/// projections when it loses KV groups or query heads and the MLP projections when it loses channels (the
/// biases of `o_proj` and `down_proj` stay shared). At least what a search holds beside the weights.
pub fn uniform_candidate_params(
    cfg: &ModelConfig,
    layers: &Range<usize>,
    fraction: f64,
    kinds: &[StructureKind],
) -> Result<usize> {
    let r = ratio_for_target(cfg, layers, fraction, kinds, Allocation::Uniform)?;
    let counts: Vec<_> = layers
        .clone()
        .map(|l| (l, Allocation::Uniform.counts(cfg, l, r, kinds)))
        .collect();
    let small = shrunk(cfg, &counts);
    let changed = |l: usize, module: Module| {
        counts.iter().any(|&(at, c)| {
            at == l
                && match module {
                    Module::Attention => c.kv_groups + c.query_heads_per_group > 0,
                    Module::Mlp => c.mlp_channels > 0,
                    _ => false,
                }
        })
    };
    Ok(tensor_specs(&small)
        .iter()
        .filter(|t| t.layer.is_some_and(|l| changed(l, t.module)))
        .filter(|t| !t.name.ends_with("o_proj.bias") && !t.name.ends_with("down_proj.bias"))
        .map(|t| t.numel())
        .sum())
}

/// The search plan over the scored layers of `model`: at least `fraction` of all parameters removed. Each
/// candidate's loss runs the fitness windows `per_batch` at a time.
#[allow(clippy::too_many_arguments)]
pub async fn search_plan<B: Backend>(
    model: &Llama<B>,
    scores: &[LayerScores],
    fraction: f64,
    kinds: &[StructureKind],
    settings: SearchSettings,
    seed: u64,
    calib: &[Vec<u32>],
    per_batch: usize,
    progress: &dyn Progress,
) -> Result<Searched> {
    settings.check()?;
    let cfg = &model.config;
    let (Some(first), Some(last)) = (scores.first(), scores.last()) else {
        return Err(Error::Invalid("search: no layers to prune".into()));
    };
    if calib.len() < settings.fitness_windows {
        return Err(Error::Invalid(format!(
            "search measures candidates on {} calibration windows, but only {} were given \
             (lower --fitness-windows or raise --calib-samples)",
            settings.fitness_windows,
            calib.len()
        )));
    }
    check_windows(&calib[..settings.fitness_windows], cfg.vocab_size)?;
    let range = first.layer..last.layer + 1;
    let r = ratio_for_target(cfg, &range, fraction, kinds, Allocation::Uniform)?;
    let total = count_params(cfg).total;
    let space = Space {
        cfg,
        scores,
        kinds,
        need: (fraction * total as f64).ceil() as usize,
        total,
    };
    let measure = Fitness::new(model, &calib[..settings.fitness_windows], per_batch);
    let mut known: HashMap<Genome, f64> = HashMap::new();
    let mut fitness = async |g: &Genome| -> Result<f64> {
        if let Some(&f) = known.get(g) {
            return Ok(f);
        }
        checkpoint(progress).await?;
        let f = measure.loss(&space.plan(g)).await?;
        known.insert(g.clone(), f);
        Ok(f)
    };
    let uniform: Genome = scores
        .iter()
        .map(|s| Allocation::Uniform.counts(cfg, s.layer, r, kinds))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EA2C4);
    let mut population = vec![uniform.clone()];
    while population.len() < settings.population {
        match offspring(&space, &uniform, &mut rng) {
            Some(child) => population.push(child),
            None => break,
        }
    }
    let generations = settings.generations + 1;
    let mut ranked: Vec<(f64, Genome)> = vec![];
    let mut best_loss = vec![];
    for generation in 0..generations {
        let event = ProgressEvent::new("search", generation, generations);
        progress.report(match best_loss.last() {
            Some(best) => event.saying(format!("best loss {best:.4}")),
            None => event,
        });
        for g in population.drain(..) {
            if ranked.iter().all(|(_, h)| *h != g) {
                let f = fitness(&g).await?;
                ranked.push((f, g));
            }
        }
        // Lower loss first; equal losses keep their order (the uniform start first).
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        ranked.truncate(settings.population.div_ceil(2));
        best_loss.push(ranked[0].0);
        if generation + 1 == generations {
            break;
        }
        let parents: Vec<&Genome> = ranked.iter().map(|(_, g)| g).collect();
        for _ in 0..4 * settings.population {
            if ranked.len() + population.len() >= settings.population {
                break;
            }
            let a = parents[rng.random_range(0..parents.len())];
            let b = parents[rng.random_range(0..parents.len())];
            let crossed: Genome = a
                .iter()
                .zip(b)
                .map(|(x, y)| if rng.random_bool(0.5) { *x } else { *y })
                .collect();
            if let Some(child) = offspring(&space, &crossed, &mut rng) {
                population.push(child);
            }
        }
    }
    progress.report(
        ProgressEvent::new("search", generations, generations)
            .saying(format!("best loss {:.4}", ranked[0].0)),
    );
    let record = SearchRecord {
        uniform_loss: known[&uniform],
        best_loss,
        candidates: known.len(),
    };
    Ok(Searched {
        plan: space.plan(&ranked[0].1),
        record,
    })
}
