//! `prunelab prune --stream`: the training-free pipeline layer by layer from the input files to the output
//! files ([`Streamed`]), for models that do not fit in memory twice (or at all).

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use web_time::Instant;

use super::convert::dtypes;
use super::files::ModelInput;
use super::output::{write_model_with, Extras, Format, Target};
use super::progress::Bars;
use super::prune::{extras_of, report_files};
use super::run_on::BackendJob;
use crate::error::{Error, Result};
use crate::prune::allocate::{global_plan, ratio_for_target, Allocation};
use crate::prune::depth::depth_plan;
use crate::prune::plan::Plan;
use crate::prune::recipe::Recipe;
use crate::prune::report::{Report, StageTime};
use crate::prune::streaming::{streamed_scores, Streamed, STREAMED_DEPTH_THEN_WIDTH};

pub(super) struct StreamJob<'a> {
    pub input: &'a ModelInput,
    pub recipe: Recipe,
    pub calib: Vec<Vec<u32>>,
    /// A saved plan to apply instead of scoring.
    pub plan: Option<Plan>,
    pub out: &'a Path,
    pub format: Option<Format>,
    pub dtype: &'a str,
}

impl BackendJob for StreamJob<'_> {
    type Output = Report;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Report> {
        let (cfg, recipe) = (&self.input.config, &self.recipe);
        if recipe.depth.is_some() {
            return Err(Error::unsupported(
                "--stream",
                "--depth-ratio",
                STREAMED_DEPTH_THEN_WIDTH,
            ));
        }
        let fixed = self.plan;
        let layers = recipe.layer_range(cfg);
        let global = fixed.is_none() && recipe.allocation == Allocation::Global;
        let depth = fixed.is_none() && recipe.prunes_depth();
        let ratio = match (
            fixed.is_some() || global || depth,
            recipe.allocation,
            recipe.ratio,
        ) {
            (true, _, _) => None,
            (false, _, Some(r)) => Some(r),
            (false, alloc, None) => Some(ratio_for_target(
                cfg,
                &layers,
                recipe.target_params.unwrap_or(0.0),
                &recipe.structures,
                alloc,
            )?),
        };
        let format = Format::resolve(self.format, self.out);
        let (hf_dtype, gguf_dtype) = dtypes(format, self.dtype)?;
        let extras: Extras = extras_of(self.input)?;
        let bars = Bars::default();
        let start = Instant::now();
        self.input.with_weights(|src| {
            // `global` and whole layers rank every layer first: a streamed pass of scores on the unpruned model,
            // then the pruning pass streams the plan it makes.
            let (mut timings, mut first_scores, mut fixed) = (vec![], vec![], fixed);
            if global || depth {
                first_scores = streamed_scores::<B::InnerBackend>(
                    src,
                    cfg,
                    recipe,
                    &self.calib,
                    &device,
                    &bars,
                )?;
                let target = recipe.target_params.unwrap_or(0.0);
                fixed = Some(match depth {
                    true => depth_plan(cfg, &first_scores, recipe.ratio, recipe.target_params)?,
                    false => global_plan(cfg, &first_scores, target, &recipe.structures)?,
                });
                timings.push(StageTime {
                    stage: "score".into(),
                    seconds: start.elapsed().as_secs_f64(),
                });
            }
            let streamed = Streamed::<B::InnerBackend>::new(
                src,
                cfg,
                recipe,
                ratio,
                fixed.as_ref(),
                &self.calib,
                device.clone(),
                &bars,
            )?;
            let out_cfg = streamed.config().clone();
            let report = std::cell::RefCell::new(None);
            let late = || {
                let (plan, mut scores, recon) = streamed.take_results();
                scores.append(&mut first_scores.clone());
                // The layers' phases, and the rest of the stream: passing tensors through and writing.
                let mut timings = timings.clone();
                let before: f64 = timings.iter().map(|t| t.seconds).sum();
                let phases = streamed.phases();
                for (stage, seconds) in [
                    ("load layers", phases.load),
                    ("compute", phases.compute),
                    ("read back", phases.read_back),
                ] {
                    timings.push(StageTime {
                        stage: stage.into(),
                        seconds,
                    });
                }
                timings.push(StageTime {
                    stage: "copy + write".into(),
                    seconds: start.elapsed().as_secs_f64()
                        - before
                        - (phases.load + phases.compute + phases.read_back),
                });
                // A depth run reports its ratio as the in-memory run does (its plan replaced the allocation).
                let ratio = if depth { recipe.ratio } else { ratio };
                let r = Report::new(
                    recipe, ratio, cfg, &out_cfg, plan, &scores, recon, timings, None,
                );
                let files = report_files(&r);
                *report.borrow_mut() = Some(r);
                files
            };
            let target = Target {
                out: self.out,
                format,
                hf_dtype,
                gguf_dtype,
            };
            write_model_with(&target, &out_cfg, &streamed, &extras, &late, &bars)?;
            Ok(report
                .into_inner()
                .expect("the report is made before the output appears"))
        })
    }
}
