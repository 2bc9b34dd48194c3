//! `prunelab synth --shape llama-7b --out DIR [--dtype bf16]`: a sharded HF folder with seeded random weights of a
//! real model's shapes, written tensor by tensor. Drawing 6.7B normal samples is the slow part (one core: about
//! 35M values/s), so the tensors the writer will ask for next are drawn and converted on the machine's other
//! cores meanwhile, up to 8 at a time ([`DrawnAhead`]); each tensor has its own random stream, so the values do
//! not depend on it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::thread::JoinHandle;

use burn::tensor::{DType, TensorData};
use clap::Args;

use super::convert::dtypes;
use super::output::{write_model, Extras, Format, Target};
use super::progress::Bars;
use crate::error::{Error, Result};
use crate::model::params::count_params;
use crate::model::random::RandomWeights;
use crate::model::shapes::known_shape;
use crate::model::tensors::tensor_specs;
use crate::model::{ModelConfig, WeightSource};

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// llama-7b, llama2-7b, llama3-8b or tiny.
    #[arg(long)]
    shape: String,
    /// Output HF folder (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: SynthArgs) -> Result<()> {
    let config = known_shape(&args.shape)?;
    let cfg = ModelConfig::from_json(&serde_json::to_vec(&config).expect("json"))?;
    let (hf_dtype, gguf_dtype) = dtypes(Format::Hf, &args.dtype)?;
    let target = Target {
        out: &args.out,
        format: Format::Hf,
        hf_dtype,
        gguf_dtype,
    };
    let extras = Extras {
        base_config: Some(config),
        tokenizer_json: None,
        gguf_metadata: vec![],
        side_files: vec![],
        files: vec![],
    };
    // Up to 8 tensors in flight (each an f32 draw and its converted copy: ≈ 4 GB at most for llama3-8b).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let depth = cores.saturating_sub(1).clamp(1, 8);
    let weights = DrawnAhead::new(&cfg, RandomWeights::new(&cfg, args.seed, 0.02), depth);
    write_model(&target, &cfg, &weights, &extras, &Bars::default())?;
    say!(
        "wrote {} ({} parameters, {})",
        args.out.display(),
        count_params(&cfg).total,
        args.dtype
    )?;
    Ok(())
}

/// A tensor being drawn (and converted) on another thread.
type Drawing = (String, DType, JoinHandle<Result<TensorData>>);

/// [`RandomWeights`] read in file order, with up to `depth` of the next tensors drawn ahead on other threads.
struct DrawnAhead {
    random: RandomWeights,
    /// Every tensor in the order the writer reads them.
    order: Vec<String>,
    depth: usize,
    /// The position in `order` of the next tensor to start, and the tensors started.
    ahead: RefCell<(usize, VecDeque<Drawing>)>,
}

impl DrawnAhead {
    fn new(cfg: &ModelConfig, random: RandomWeights, depth: usize) -> Self {
        Self {
            random,
            order: tensor_specs(cfg).into_iter().map(|s| s.name).collect(),
            depth,
            ahead: RefCell::new((0, VecDeque::new())),
        }
    }
}

impl WeightSource for DrawnAhead {
    fn inventory(&self) -> Vec<(String, Vec<usize>)> {
        self.random.inventory()
    }

    fn read(&self, name: &str) -> Result<TensorData> {
        self.random.read(name)
    }

    /// `name` as `dtype`: drawn on another thread when it is the next tensor in file order (the following ones
    /// are started meanwhile, `depth` at a time), else drawn here.
    fn read_as(&self, name: &str, dtype: DType) -> Result<TensorData> {
        let mut ahead = self.ahead.borrow_mut();
        let (next, started) = &mut *ahead;
        let in_order = match started.front() {
            Some((n, d, _)) => n == name && *d == dtype,
            None => self.order.get(*next).is_some_and(|n| n == name),
        };
        if !in_order {
            // Not the order the threads follow: start over after `name` (running draws finish unused).
            started.clear();
            *next = self
                .order
                .iter()
                .position(|n| n == name)
                .map_or(self.order.len(), |i| i + 1);
            return Ok(self.random.read(name)?.convert_dtype(dtype));
        }
        while started.len() < self.depth.max(1) && *next < self.order.len() {
            let (random, upcoming) = (self.random.clone(), self.order[*next].clone());
            let task = upcoming.clone();
            let handle = std::thread::spawn(move || Ok(random.read(&task)?.convert_dtype(dtype)));
            started.push_back((upcoming, dtype, handle));
            *next += 1;
        }
        let (_, _, handle) = started
            .pop_front()
            .expect("the asked tensor was started first");
        handle
            .join()
            .map_err(|_| Error::Invalid(format!("drawing {name} panicked")))?
    }
}
