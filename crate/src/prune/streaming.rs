//! Layer-by-layer pruning from disk to disk, for models larger than memory: [`Streamed`] is a
//! [`WeightSource`] of the pruned model that a writer pulls tensor by tensor in file order. Asking for a tensor
//! of layer `l` loads layer `l` from the input source, prunes and repairs it on the calibration activations of
//! the pruned prefix, reads it back and drops it; embeddings, the final norm and the head pass straight through.
//! A weight score (or a saved plan) without repair needs no activations: each layer of the range is only
//! scored and sliced, and no calibration text is read.
//! Whole layers (a depth plan) are skipped and the layers after them renamed; a repaired run of removed layers
//! is absorbed by the kept layer before it, which stays on the device while the run's layers pass through one by
//! one (two layers on the device).
//! Whole layers and width in one run chain two passes: the width pass reads the depth pass as its input.
//! Memory: the calibration activations, one decoder layer on the device (two for a depth repair) and one on the
//! host, per pass — the input's other layers are never held. Training-free recipes only (gradient scores need
//! the whole model's backward, the skipped-layer perplexity every later layer).
//! Native only: a writer pulls synchronously, so reads block on the device (the browser keeps small models
//! whole).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use web_time::Instant;

use burn::tensor::{backend::Backend, Tensor, TensorData};

use super::activations::{windows_per_chunk, Activations};
use super::allocate::Allocation;
use super::calib::check_windows;
use super::depth::{repair_before_run, runs, whole_layer_scores};
use super::importance::LayerScores;
use super::plan::{LayerPlan, Plan};
use super::recipe::Recipe;
use super::sequential::{
    add_zero_biases_to_block, layer_choice, layer_scores, prune_layer, slice_layer, weight_scores,
    with_biases, Reconstruction,
};
use super::structure::even_query_heads;
use crate::error::{Error, Result};
use crate::model::llama::Block;
use crate::model::tensors::tensor_specs;
use crate::model::weights::check_inventory;
use crate::model::{Llama, ModelConfig, WeightSource};
use crate::progress::{Progress, ProgressEvent};

/// Bytes of decoder-layer weights held at once, for the memory accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// On the device (the layer being pruned).
    pub device: usize,
    /// On the host (the pruned layer waiting to be written).
    pub host: usize,
}

struct State<B: Backend> {
    /// The next layer to run (to prune, or to move the calibration activations through).
    next: usize,
    /// The calibration activations entering layer `next`.
    h: Option<Activations<B>>,
    /// The last pruned layer, read back in the device's float type, by HF name; taken as it is written.
    ready: HashMap<String, TensorData>,
    /// The input layer `ready` holds.
    ready_layer: Option<usize>,
    plans: Vec<LayerPlan>,
    scores: Vec<LayerScores>,
    reconstruction: Vec<Reconstruction>,
    held: Held,
    peak: Held,
    /// Seconds spent so far loading layers, computing, and reading pruned layers back.
    seconds: Phases,
}

/// Where a streamed run's time goes, split at its synchronisation points (a device works asynchronously: an
/// upload's cost can land in the computation that first waits for it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    /// Reading a layer's input tensors and handing them to the device.
    pub load: f64,
    /// Forwards, statistics, scores and compensation (they wait for their own results).
    pub compute: f64,
    /// Reading pruned layers back to the host.
    pub read_back: f64,
}

/// The pruned model as a pull-driven weight source (see the module docs).
pub struct Streamed<'a, B: Backend> {
    src: &'a dyn WeightSource,
    cfg: ModelConfig,
    out: ModelConfig,
    recipe: &'a Recipe,
    ratio: Option<f64>,
    fixed: Option<&'a Plan>,
    calib: &'a [Vec<u32>],
    /// Whether the pass runs the calibration windows through the layers (for an activation score or a
    /// repair); a weight score or a saved plan without repair only slices each layer.
    activations: bool,
    layers: Range<usize>,
    /// The input layer behind each output layer (all of them, unless a depth plan removes some).
    kept: Vec<usize>,
    /// A depth plan's repaired runs: the kept layer before each run of removed layers, and the run.
    runs: Vec<(usize, Range<usize>)>,
    /// Output layers below this one stay readable until the next pruned layer replaces them (see
    /// [`Self::rereadable_below`]).
    reread_below: usize,
    device: B::Device,
    progress: &'a dyn Progress,
    state: RefCell<State<B>>,
}

/// The layer a tensor name belongs to (`model.layers.{l}.…`).
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Why one pass does not take whole layers and width together.
const ONE_KIND_PER_PASS: &str =
    "one streamed pass removes whole layers or narrows them, not both: stream the whole layers, then a \
     second pass over that one (prune --stream chains them)";

impl<'a, B: Backend> Streamed<'a, B> {
    /// Checks `src` against `cfg` and the recipe, and works out the output's shapes (from the allocation's
    /// counts at `ratio`, or from `fixed`). Nothing is loaded yet.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        src: &'a dyn WeightSource,
        cfg: &ModelConfig,
        recipe: &'a Recipe,
        ratio: Option<f64>,
        fixed: Option<&'a Plan>,
        calib: &'a [Vec<u32>],
        device: B::Device,
        progress: &'a dyn Progress,
    ) -> Result<Self> {
        check_inventory(cfg, src)?;
        let depth = fixed.filter(|p| !p.removed_layers.is_empty());
        let combined = depth.is_some_and(|p| p.layers.iter().any(|lp| !lp.is_empty()));
        if combined || (recipe.depth.is_some() && fixed.is_none()) {
            return Err(Error::Invalid(ONE_KIND_PER_PASS.into()));
        }
        if recipe.prunes_depth() && fixed.is_none() {
            return Err(Error::Invalid(
                "a streamed depth run needs its plan: score the layers first (streamed_scores)"
                    .into(),
            ));
        }
        match fixed {
            Some(plan) => recipe.check_with_plan(cfg, plan)?,
            None => recipe.check(cfg)?,
        }
        if fixed.is_none() {
            check_training_free(recipe)?;
        }
        let layers = recipe.layer_range(cfg);
        let mut out = cfg.clone();
        for l in layers.clone().filter(|_| depth.is_none()) {
            let choice = layer_choice(cfg, recipe, l, ratio, fixed)?;
            let lp = match choice {
                super::sequential::LayerChoice::Fixed(lp) => lp,
                // Which structures go is decided layer by layer; their counts fix the shapes.
                super::sequential::LayerChoice::Count(c) => {
                    let kv_groups: Vec<usize> = (0..c.kv_groups).collect();
                    let s = &cfg.layers[l];
                    LayerPlan {
                        layer: l,
                        query_heads: even_query_heads(
                            &vec![0.0; s.num_heads],
                            s,
                            c.query_heads_per_group,
                            &kv_groups,
                        ),
                        kv_groups,
                        mlp_channels: (0..c.mlp_channels).collect(),
                    }
                }
            };
            out.layers[l] = Plan::new(cfg, vec![lp]).kept(cfg, l).shape();
        }
        let (kept, runs) = match depth {
            Some(plan) => {
                out.layers = plan.pruned_config(cfg).layers;
                let runs = match recipe.compensation {
                    super::compensate::Compensation::None => vec![],
                    _ => runs(&plan.removed_layers)?,
                };
                (plan.kept_layers(cfg), runs)
            }
            None => ((0..cfg.num_layers()).collect(), vec![]),
        };
        if recipe.compensation.adds_bias() {
            with_biases(&mut out);
        }
        let activations = recipe.needs_calibration(fixed.is_some());
        if activations {
            check_windows(calib, cfg.vocab_size)?;
        }
        Ok(Self {
            src,
            cfg: cfg.clone(),
            out,
            recipe,
            ratio,
            fixed,
            calib,
            activations,
            layers,
            kept,
            runs,
            reread_below: 0,
            device,
            progress,
            state: RefCell::new(State {
                next: 0,
                h: None,
                ready: HashMap::new(),
                ready_layer: None,
                plans: vec![],
                scores: vec![],
                reconstruction: vec![],
                held: Held::default(),
                peak: Held::default(),
                seconds: Phases::default(),
            }),
        })
    }

    /// Lets the pruned output layers below `layer` be read again until the next pruned layer replaces them, at
    /// the cost of a copy of each tensor read: a second streamed pass over this one (width after whole layers)
    /// runs its calibration activations through the layers below its range, which its writer also copies.
    pub fn rereadable_below(self, layer: usize) -> Self {
        Self {
            reread_below: layer,
            ..self
        }
    }

    /// The output's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.out
    }

    /// After everything was read: the plan, the scores and the reconstruction errors (taken out).
    /// The pass is over: its calibration activations and any layer still held go.
    pub fn take_results(&self) -> (Plan, Vec<LayerScores>, Vec<Reconstruction>) {
        let mut s = self.state.borrow_mut();
        s.h = None;
        let leftover: usize = s.ready.values().map(|v| v.bytes.len()).sum();
        s.ready.clear();
        Self::account(&mut s, 0, -(leftover as isize));
        let plans = std::mem::take(&mut s.plans);
        let plan = match self.fixed.filter(|p| !p.removed_layers.is_empty()) {
            Some(depth) => depth.clone(),
            None => Plan::new(&self.cfg, plans),
        };
        (
            plan,
            std::mem::take(&mut s.scores),
            std::mem::take(&mut s.reconstruction),
        )
    }

    /// The most decoder-layer bytes held at once so far.
    pub fn peak(&self) -> Held {
        self.state.borrow().peak
    }

    /// The time spent so far in each phase of the layers' work.
    pub fn phases(&self) -> Phases {
        self.state.borrow().seconds
    }

    /// The device bytes of decoder layer `l`'s tensors, in their float type (half of f32's under bf16).
    fn layer_bytes(block: &Block<B>, l: usize) -> usize {
        block
            .named_weights(l)
            .into_iter()
            .map(|(_, w)| {
                let t = w.flatten();
                t.dims()[0] * t.dtype().size()
            })
            .sum()
    }

    fn account(s: &mut State<B>, device: isize, host: isize) {
        s.held.device = (s.held.device as isize + device) as usize;
        s.held.host = (s.held.host as isize + host) as usize;
        s.peak.device = s.peak.device.max(s.held.device);
        s.peak.host = s.peak.host.max(s.held.host);
    }

    /// The calibration activations entering layer `l`: the embedded windows for layer 0, else what the layer
    /// before left (gone when that layer failed: the pass cannot resume).
    fn take_flow(&self, s: &mut State<B>, l: usize) -> Result<Activations<B>> {
        match s.h.take() {
            Some(h) => Ok(h),
            _ if l == 0 => embed(self.src, &self.cfg, self.calib, self.recipe, &self.device),
            _ => Err(Error::Invalid(format!(
                "the streamed pass cannot resume at layer {l}: an earlier layer failed"
            ))),
        }
    }

    /// Runs layers up to and including `target` (those before the range only move the activations, and are
    /// skipped when nothing needs them).
    fn advance(&self, target: usize) -> Result<()> {
        let mut s = self.state.borrow_mut();
        if !self.activations {
            s.next = s.next.max(self.layers.start);
        }
        while s.next <= target && s.next < self.layers.end {
            if self.progress.cancelled() {
                return Err(Error::Cancelled);
            }
            let l = s.next;
            let (clock, upstream) = (Instant::now(), self.src.work_seconds());
            let flow = match self.activations {
                true => Some(self.take_flow(&mut s, l)?),
                false => None,
            };
            let mut block = Block::<B>::load(&self.cfg, l, self.src, &self.device)?;
            s.seconds.load += clock.elapsed().as_secs_f64() - (self.src.work_seconds() - upstream);
            let clock = Instant::now();
            let bytes = Self::layer_bytes(&block, l) as isize;
            Self::account(&mut s, bytes, 0);
            let mut next = l + 1;
            if !self.computes(l) {
                let h = flow.expect("layers that are not pruned run only for the activations");
                s.h = Some(h.through(&block));
                s.seconds.compute += clock.elapsed().as_secs_f64();
            } else if let Some((step, (_, run))) =
                self.runs.iter().enumerate().find(|(_, (p, _))| *p == l)
            {
                let h = flow.expect("a depth repair runs the activations");
                let through_run = |mut h: Activations<B>| -> Result<Activations<B>> {
                    for r in run.clone() {
                        let removed = Block::<B>::load(&self.cfg, r, self.src, &self.device)?;
                        let b = Self::layer_bytes(&removed, r) as isize;
                        Self::account(&mut s, b, 0);
                        h = h.through(&removed);
                        Self::account(&mut s, -b, 0);
                    }
                    Ok(h)
                };
                let (after, errors) = pollster::block_on(repair_before_run(
                    &mut block,
                    l,
                    h,
                    through_run,
                    self.recipe,
                    &self.device,
                ))?;
                s.h = Some(after);
                s.reconstruction.push(errors);
                if self.recipe.compensation.adds_bias() {
                    add_zero_biases_to_block(&mut block, &self.device);
                }
                s.seconds.compute += clock.elapsed().as_secs_f64();
                let out_index = self.kept.iter().position(|&k| k == l).expect("p is kept");
                self.hold(&mut s, &block, l, out_index)?;
                next = run.end;
                self.progress.report(
                    ProgressEvent::new("layers", step + 1, self.runs.len())
                        .saying(format!("layers {}..{} into layer {l}", run.start, run.end)),
                );
            } else {
                let choice = layer_choice(&self.cfg, self.recipe, l, self.ratio, self.fixed)?;
                let shape = self.cfg.layers[l];
                let (plan, scores) = match flow {
                    Some(h) => {
                        let out = pollster::block_on(prune_layer(
                            &mut block,
                            l,
                            shape,
                            h,
                            &choice,
                            self.recipe,
                            &self.device,
                        ))?;
                        s.h = Some(out.h);
                        s.reconstruction.extend(out.reconstruction);
                        (out.plan, out.scores)
                    }
                    None => {
                        pollster::block_on(slice_layer(&mut block, l, shape, &choice, self.recipe))?
                    }
                };
                if self.recipe.compensation.adds_bias() {
                    add_zero_biases_to_block(&mut block, &self.device);
                }
                s.seconds.compute += clock.elapsed().as_secs_f64();
                self.hold(&mut s, &block, l, l)?;
                s.plans.push(plan);
                s.scores.extend(scores);
                self.progress.report(
                    ProgressEvent::new("layers", l + 1 - self.layers.start, self.layers.len())
                        .saying(format!("layer {l}")),
                );
            }
            drop(block);
            Self::account(&mut s, -bytes, 0);
            s.next = next;
        }
        Ok(())
    }

    /// Whether input layer `l` is pruned or repaired here (else it passes through, or only moves the
    /// activations): a width run's layers in the range, a depth run's kept layers before removed ones.
    fn computes(&self, l: usize) -> bool {
        match self.kept.len() == self.cfg.num_layers() {
            true => self.layers.contains(&l),
            false => self.runs.iter().any(|(p, _)| *p == l),
        }
    }

    /// Reads `block` (input layer `l`) back to the host as output layer `out_index`, in place of the last layer
    /// held there.
    fn hold(&self, s: &mut State<B>, block: &Block<B>, l: usize, out_index: usize) -> Result<()> {
        let clock = Instant::now();
        let leftover: usize = s.ready.values().map(|v| v.bytes.len()).sum();
        s.ready.clear();
        s.ready_layer = Some(l);
        Self::account(s, 0, -(leftover as isize));
        for (name, w) in block.named_weights(out_index) {
            let v = pollster::block_on(w.to_data())?;
            let b = v.bytes.len() as isize;
            s.ready.insert(name, v);
            Self::account(s, 0, b);
        }
        s.seconds.read_back += clock.elapsed().as_secs_f64();
        Ok(())
    }
}

/// Streamed runs see one layer at a time: gradient scores, the skipped-layer perplexity and the search
/// allocation, which need the whole model, are refused.
fn check_training_free(recipe: &Recipe) -> Result<()> {
    if let Allocation::Search(_) = recipe.allocation {
        return Err(Error::Invalid(
            "streamed pruning sees one layer at a time: the search allocation measures every candidate on \
             the whole model (drop --stream)"
                .into(),
        ));
    }
    match recipe.importance.needs_whole_model() {
        true => Err(Error::Invalid(
            "streamed pruning is training-free and sees one layer at a time: gradient scores and the \
             skipped-layer perplexity need the whole model (drop --stream)"
                .into(),
        )),
        false => Ok(()),
    }
}

/// Calibration activations entering layer 0, in the recipe's chunks of windows: embedding rows gathered on the
/// host in the checkpoint's float type (the embedding matrix never goes to the device).
fn embed<B: Backend>(
    src: &dyn WeightSource,
    cfg: &ModelConfig,
    calib: &[Vec<u32>],
    recipe: &Recipe,
    device: &B::Device,
) -> Result<Activations<B>> {
    check_windows(calib, cfg.vocab_size)?;
    let table = src.read("model.embed_tokens.weight")?;
    let (d, len) = (cfg.hidden_size, calib[0].len());
    let row = d * table.dtype.size();
    let bytes = table.as_bytes();
    let per_chunk = windows_per_chunk(cfg, len, recipe);
    let chunks = calib
        .chunks(per_chunk)
        .map(|windows| {
            let mut rows = Vec::with_capacity(windows.len() * len * row);
            for &t in windows.iter().flatten() {
                rows.extend_from_slice(&bytes[t as usize * row..(t as usize + 1) * row]);
            }
            let shape = [windows.len(), len, d];
            Tensor::from_data(TensorData::from_bytes_vec(rows, shape, table.dtype), device)
        })
        .collect();
    Ok(Activations {
        chunks,
        pos: Llama::<B>::positions_for(cfg, len, device),
    })
}

/// The training-free scores of every layer of the recipe's range on the model read from `src` one layer at a
/// time (for `global` and whole layers, which rank all layers before anything is removed; the pruning pass then
/// streams the plan; `src` is the input, or a depth pass for a width step after whole layers). Memory: one
/// layer, and the calibration activations for an activation score (a weight score reads only the range's
/// layers).
pub fn streamed_scores<B: Backend>(
    src: &dyn WeightSource,
    cfg: &ModelConfig,
    recipe: &Recipe,
    calib: &[Vec<u32>],
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Vec<LayerScores>> {
    check_inventory(cfg, src)?;
    check_training_free(recipe)?;
    let layers = recipe.layer_range(cfg);
    // Windows the pruning pass will need are refused now, not after this pass read every layer.
    if recipe.needs_calibration(false) {
        check_windows(calib, cfg.vocab_size)?;
    }
    // A weight score reads each layer of the range alone; an activation score runs the windows through.
    let kind = recipe.importance;
    let mut flow = match kind.needs_activations() || kind.ranks_only_layers() {
        true => Some(embed::<B>(src, cfg, calib, recipe, device)?),
        false => None,
    };
    let first = if flow.is_some() { 0 } else { layers.start };
    let mut scores = Vec::with_capacity(layers.len());
    for l in first..layers.end {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let block = Block::<B>::load(cfg, l, src, device)?;
        if let Some(h) = flow.take() {
            let next = match l < layers.start {
                true => h.through(&block),
                false => {
                    let (s, next) = pollster::block_on(layer_scores(&block, l, cfg, h, recipe))?;
                    scores.push(s);
                    next
                }
            };
            flow = Some(next);
        } else {
            scores.push(pollster::block_on(weight_scores(
                &block,
                l,
                &cfg.layers[l],
                recipe,
            ))?);
        }
        if l >= layers.start {
            progress.report(
                ProgressEvent::new("score", l + 1 - layers.start, layers.len())
                    .saying(format!("layer {l}")),
            );
        }
    }
    Ok(match recipe.prunes_depth() && !kind.ranks_only_layers() {
        true => whole_layer_scores(scores, recipe),
        false => scores,
    })
}

impl<B: Backend> WeightSource for Streamed<'_, B> {
    fn inventory(&self) -> Vec<(String, Vec<usize>)> {
        tensor_specs(&self.out)
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect()
    }

    fn work_seconds(&self) -> f64 {
        let p = self.phases();
        p.load + p.compute + p.read_back + self.src.work_seconds()
    }

    fn read(&self, name: &str) -> Result<TensorData> {
        // Output layer `i` is input layer `kept[i]`.
        let layer = layer_of(name).and_then(|i| Some((i, *self.kept.get(i)?)));
        let input = match layer {
            Some((i, l)) if i != l => name.replacen(
                &format!("model.layers.{i}."),
                &format!("model.layers.{l}."),
                1,
            ),
            _ => name.to_string(),
        };
        let Some(l) = layer.map(|(_, l)| l).filter(|&l| self.computes(l)) else {
            // Not pruned here: as in the input (zero biases where the output gained them).
            let has = self.src.inventory().iter().any(|(n, _)| *n == input);
            return match has {
                true => self.src.read(&input),
                false => {
                    let spec = tensor_specs(&self.out).into_iter().find(|s| s.name == name);
                    spec.filter(|_| name.ends_with(".bias"))
                        .map(|s| TensorData::new(vec![0.0f32; s.numel()], s.shape))
                        .ok_or_else(|| Error::MissingTensor {
                            name: name.into(),
                            expected: vec![],
                        })
                }
            };
        };
        self.advance(l)?;
        let mut s = self.state.borrow_mut();
        if s.ready_layer != Some(l) {
            return Err(Error::Invalid(format!(
                "streamed tensors are read once, in layer order: {name} (input layer {l}) was asked \
                 after input layer {}",
                s.next.saturating_sub(1)
            )));
        }
        // A tensor read again stays held (and counted) until the next pruned layer replaces it.
        let again = layer.is_some_and(|(i, _)| i < self.reread_below);
        let v = match again {
            true => s.ready.get(name).cloned(),
            false => s.ready.remove(name),
        }
        .ok_or_else(|| {
            Error::Invalid(format!(
                "streamed tensor {name} was already read or does not exist"
            ))
        })?;
        if !again {
            Self::account(&mut s, 0, -(v.bytes.len() as isize));
        }
        Ok(v)
    }
}
