//! Writing a model to disk as an HF folder or a GGUF file: whole or not at all (a temporary sibling renamed into
//! place at the end, removed if the run fails or is interrupted), never over an existing path, one tensor in
//! memory at a time (`synth` draws a few ahead).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::{backend::Backend, TensorData};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::io::gguf::metadata::{keep_pre, output_metadata};
use crate::io::gguf::reader::Value;
use crate::io::gguf::{GgufDtype, GgufWriter};
use crate::io::safetensors_out::{hf_config, SafetensorsLayout, StDtype};
use crate::io::side_files::SideFile;
use crate::model::named::Weight;
use crate::model::tensors::tensor_specs;
use crate::model::{Llama, ModelConfig, WeightSource};
use crate::progress::{Progress, ProgressEvent};

/// HF folder or GGUF file.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Hf,
    Gguf,
}

impl Format {
    /// `--format` if given, else GGUF for a `.gguf` path and an HF folder otherwise.
    pub fn resolve(flag: Option<Format>, out: &Path) -> Format {
        flag.unwrap_or(if out.extension().is_some_and(|e| e == "gguf") {
            Format::Gguf
        } else {
            Format::Hf
        })
    }
}

/// Shard size of written safetensors (transformers' default `max_shard_size`).
pub const MAX_SHARD_BYTES: usize = 5 << 30;

/// What goes into an output besides the weights.
pub struct Extras {
    /// The input's `config.json`, whose fields we do not model are kept.
    pub base_config: Option<Json>,
    pub tokenizer_json: Option<Json>,
    /// GGUF metadata carried from a GGUF input (general.*, tokenizer.*).
    pub gguf_metadata: Vec<(String, Value)>,
    /// An HF input's tokenizer and generation files (`tokenizer_config.json`, `generation_config.json`, …):
    /// copied verbatim into an HF output; a GGUF output takes their chat template.
    pub side_files: Vec<SideFile>,
    /// More files to place beside the weights (`report.json`, `plan.json`, …): in the folder for HF, next to
    /// the file as `NAME.<file>` for GGUF.
    pub files: NamedFiles,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn temp_sibling(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Small files by name (a report, a plan, a tokenizer), written next to a model.
pub type NamedFiles = Vec<(String, Vec<u8>)>;

/// Where and how to write: path, format and storage type.
pub struct Target<'a> {
    pub out: &'a Path,
    pub format: Format,
    pub hf_dtype: StDtype,
    pub gguf_dtype: GgufDtype,
}

/// Writes `cfg` with the weights of `src` to `target`.
pub fn write_model(
    target: &Target,
    cfg: &ModelConfig,
    src: &dyn WeightSource,
    extras: &Extras,
    progress: &dyn Progress,
) -> Result<()> {
    write_model_with(target, cfg, src, extras, &|_| Ok(vec![]), progress)
}

/// [`write_model`] with more files made by `late` once the model was written under a temporary name, which
/// `late` gets (a streamed run's report, which may evaluate the model as written), still before the output
/// appears; an error from `late` leaves nothing.
pub fn write_model_with(
    target: &Target,
    cfg: &ModelConfig,
    src: &dyn WeightSource,
    extras: &Extras,
    late: &dyn Fn(&Path) -> Result<NamedFiles>,
    progress: &dyn Progress,
) -> Result<()> {
    let Target {
        out,
        format,
        hf_dtype,
        gguf_dtype,
    } = *target;
    // A GGUF output is one file: the other files (report, plan, recipe) go next to it as `OUT.NAME`.
    let beside = |name: &str| {
        out.with_file_name(format!(
            "{}.{name}",
            out.file_name().unwrap_or_default().to_string_lossy()
        ))
    };
    let taken = |p: &Path| match p.exists() {
        true => Err(Error::Invalid(format!(
            "{} exists; choose a new output path (prunelab never overwrites)",
            p.display()
        ))),
        false => Ok(()),
    };
    taken(out)?;
    if format == Format::Gguf {
        for (name, _) in &extras.files {
            taken(&beside(name))?;
        }
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: the folder {} does not exist",
                out.display(),
                parent.display()
            )));
        }
    }
    let partial = Partial::default();
    let tmp = partial.add(temp_sibling(out));
    let written = match format {
        Format::Hf => write_hf(&tmp, cfg, src, extras, hf_dtype, progress),
        Format::Gguf => write_gguf(&tmp, cfg, src, extras, gguf_dtype, progress),
    };
    // A failed write names the output the user gave, then the temporary file it was writing.
    written.map_err(|e| match e {
        Error::Io { path, source } => Error::Io {
            path: format!("{} (writing {path})", out.display()),
            source,
        },
        e => e,
    })?;
    let late = late(&tmp)?;
    // Every file is complete under a temporary name before the first rename; the model appears last.
    let mut moves = vec![];
    match format {
        Format::Hf => {
            for (name, bytes) in &late {
                std::fs::write(tmp.join(name), bytes).map_err(io(&tmp.join(name)))?;
            }
        }
        Format::Gguf => {
            for (name, bytes) in extras.files.iter().chain(&late) {
                let (to, part) = (beside(name), partial.add(temp_sibling(&beside(name))));
                taken(&to)?;
                std::fs::write(&part, bytes).map_err(io(&to))?;
                moves.push((part, to));
            }
        }
    }
    if progress.cancelled() {
        return Err(Error::Cancelled);
    }
    moves.push((tmp, out.to_path_buf()));
    for (i, (from, to)) in moves.iter().enumerate() {
        if let Err(e) = std::fs::rename(from, to) {
            for (_, done) in &moves[..i] {
                let _ = std::fs::remove_file(done);
            }
            return Err(io(to)(e));
        }
    }
    Ok(())
}

/// The temporary outputs being written, for the interrupt handler to remove before it ends the process.
static PARTIAL: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The temporary outputs of one write, recorded in [`PARTIAL`]. Dropped — on success, error or panic — it
/// removes those still there: after the renames none is.
#[derive(Default)]
struct Partial {
    paths: std::cell::RefCell<Vec<PathBuf>>,
}

impl Partial {
    fn add(&self, path: PathBuf) -> PathBuf {
        PARTIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.clone());
        self.paths.borrow_mut().push(path.clone());
        path
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let mut all = PARTIAL.lock().unwrap_or_else(|e| e.into_inner());
        for path in self.paths.borrow().iter() {
            remove(path);
            all.retain(|p| p != path);
        }
    }
}

fn remove(path: &Path) {
    let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
}

/// Removes the temporary outputs being written, if any (a second Ctrl-C ends the process at once).
pub fn remove_partial() {
    for path in PARTIAL.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        remove(&path);
    }
}

fn write_hf(
    dir: &Path,
    cfg: &ModelConfig,
    src: &dyn WeightSource,
    extras: &Extras,
    dtype: StDtype,
    progress: &dyn Progress,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut config = hf_config(cfg, extras.base_config.as_ref(), dtype);
    keep_pre(&mut config, &extras.gguf_metadata);
    let put = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).map_err(io(&dir.join(name)))
    };
    put(
        "config.json",
        &serde_json::to_vec_pretty(&config).expect("serialisable"),
    )?;
    let specs: Vec<(String, Vec<usize>)> = tensor_specs(cfg)
        .into_iter()
        .map(|s| (s.name, s.shape))
        .collect();
    let layout = SafetensorsLayout::new(&specs, dtype, MAX_SHARD_BYTES)?;
    let total = specs.len();
    let mut done = 0;
    for shard in &layout.shards {
        let path = dir.join(&shard.file);
        let mut w = BufWriter::new(File::create(&path).map_err(io(&path))?);
        w.write_all(&shard.header).map_err(io(&path))?;
        for name in &shard.tensors {
            if progress.cancelled() {
                return Err(Error::Cancelled);
            }
            w.write_all(&dtype.encode(src.read_as(name, dtype.burn_dtype())?))
                .map_err(io(&path))?;
            done += 1;
            progress.report(ProgressEvent::new("write", done, total).saying(name.as_str()));
        }
        w.flush().map_err(io(&path))?;
    }
    if let Some(index) = &layout.index {
        put("model.safetensors.index.json", index)?;
    }
    if let Some(tok) = &extras.tokenizer_json {
        put(
            "tokenizer.json",
            &serde_json::to_vec(tok).expect("serialisable"),
        )?;
    }
    for (name, bytes) in extras.side_files.iter().chain(&extras.files) {
        put(name, bytes)?;
    }
    Ok(())
}

fn write_gguf(
    path: &Path,
    cfg: &ModelConfig,
    src: &dyn WeightSource,
    extras: &Extras,
    dtype: GgufDtype,
    progress: &dyn Progress,
) -> Result<()> {
    let meta = output_metadata(
        cfg,
        &extras.gguf_metadata,
        extras.tokenizer_json.as_ref(),
        extras.base_config.as_ref(),
        &extras.side_files,
    )?;
    let writer = GgufWriter::new(cfg, &meta, dtype)?;
    let mut w = BufWriter::new(File::create(path).map_err(io(path))?);
    w.write_all(writer.header()).map_err(io(path))?;
    let total = writer.tensors.len();
    for i in 0..total {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        w.write_all(&writer.tensor(i, src)?).map_err(io(path))?;
        progress.report(
            ProgressEvent::new("write", i + 1, total).saying(writer.tensors[i].gguf_name.as_str()),
        );
    }
    w.flush().map_err(io(path))
}

/// A model's weights, read back one tensor at a time for export.
pub struct ModelWeights<B: Backend> {
    weights: HashMap<String, Weight<B>>,
}

impl<B: Backend> WeightSource for ModelWeights<B> {
    fn inventory(&self) -> Vec<(String, Vec<usize>)> {
        self.weights
            .iter()
            .map(|(n, w)| (n.clone(), w.shape()))
            .collect()
    }
    fn read(&self, name: &str) -> Result<TensorData> {
        let w = self.weights.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.into(),
            expected: vec![],
        })?;
        pollster::block_on(w.clone().to_data())
    }
}

impl<B: Backend> ModelWeights<B> {
    pub fn of(model: &Llama<B>) -> Self {
        Self {
            weights: model.named_weights().into_iter().collect(),
        }
    }
}
