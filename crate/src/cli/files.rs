//! A model on disk: an HF folder (`config.json`, `model.safetensors` or shards with their index, optional
//! `tokenizer.json`) or one `.gguf` file. Weight files are memory-mapped, never read whole.

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value as Json;

use crate::error::{parse_json, Error, Result};
use crate::eval::perplexity::check_ids;
use crate::io::gguf::metadata::carried;
use crate::io::gguf::{reader::Value, tokenizer::tokenizer_json, GgufModel};
use crate::io::side_files::{hf_side_files, stop_ids, SideFile, SIDE_FILES};
use crate::io::tokenizer::ids_from_json;
use crate::io::{SafetensorsWeights, Tokenizer};
use crate::model::{ModelConfig, WeightSource};

/// Reads a whole (small) file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads a UTF-8 text file.
pub fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|_| Error::Text(format!("{} is not UTF-8 text", path.display())))
}

/// Token ids from a JSON file, `[id, …]` or `[[id, …], …]` (windows concatenated), each checked against a
/// vocabulary of `vocab_size` before anything loads; errors name the file.
pub fn read_ids(path: &Path, vocab_size: usize) -> Result<Vec<u32>> {
    let what = path.display().to_string();
    let ids = ids_from_json(&read(path)?, &what)?;
    check_ids(&ids, vocab_size).map_err(|e| match e {
        Error::Text(m) => Error::Text(format!("{what}: {m}")),
        e => e,
    })?;
    Ok(ids)
}

fn map(path: &Path) -> Result<Mmap> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: mapped read-only and never written by us while mapped; another process truncating the file under
    // us is the one hazard memory maps share with every mmap-based loader.
    unsafe { Mmap::map(&file) }.map_err(io)
}

enum Files {
    Hf {
        maps: Vec<(String, Mmap)>,
        index: Option<Vec<u8>>,
    },
    Gguf(Mmap),
}

/// An opened model: its resolved config and its (mapped) weight files.
pub struct ModelInput {
    pub path: PathBuf,
    pub config: ModelConfig,
    files: Files,
}

impl ModelInput {
    /// Opens an HF folder or a `.gguf` file.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
            return Self::gguf(path);
        }
        if !path.is_dir() {
            return Err(Error::Invalid(format!(
                "{} is neither a model folder (config.json + *.safetensors) nor a .gguf file",
                path.display()
            )));
        }
        let config = ModelConfig::from_json(&read(&path.join("config.json"))?)?;
        let index_path = path.join("model.safetensors.index.json");
        let index = index_path.exists().then(|| read(&index_path)).transpose()?;
        let maps = weight_files(path, index.as_deref())?
            .into_iter()
            .map(|name| Ok((name.clone(), map(&path.join(&name))?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            path: path.into(),
            config,
            files: Files::Hf { maps, index },
        })
    }

    /// A GGUF file, whatever its name ends with.
    pub fn gguf(path: &Path) -> Result<Self> {
        let m = map(path)?;
        let config = GgufModel::parse(&m)?.config;
        Ok(Self {
            path: path.into(),
            config,
            files: Files::Gguf(m),
        })
    }

    /// Runs `f` with the weights (parsed from the mapped files).
    pub fn with_weights<R>(&self, f: impl FnOnce(&dyn WeightSource) -> Result<R>) -> Result<R> {
        match &self.files {
            Files::Hf { maps, index } => {
                let files: Vec<(String, &[u8])> =
                    maps.iter().map(|(n, m)| (n.clone(), &m[..])).collect();
                f(&SafetensorsWeights::from_files(&files, index.as_deref())?)
            }
            Files::Gguf(m) => f(&GgufModel::parse(m)?),
        }
    }

    /// The original `config.json` of an HF folder (fields we do not model are carried to outputs).
    pub fn hf_config_json(&self) -> Result<Option<Json>> {
        match self.files {
            Files::Gguf(_) => Ok(None),
            Files::Hf { .. } => self.json_file("config.json"),
        }
    }

    /// `tokenizer.json` of the folder, or built from the GGUF metadata; `None` when the model has none.
    pub fn tokenizer_json(&self) -> Result<Option<Json>> {
        match &self.files {
            Files::Gguf(m) => {
                let model = GgufModel::parse(m)?;
                match model.file.get("tokenizer.ggml.model") {
                    Some(_) => tokenizer_json(&model.file).map(Some),
                    None => Ok(None),
                }
            }
            Files::Hf { .. } => self.json_file("tokenizer.json"),
        }
    }

    /// The tokenizer, if the model has one.
    pub fn tokenizer(&self) -> Result<Option<Tokenizer>> {
        self.tokenizer_json()?
            .map(|j| Tokenizer::from_json(j.to_string().as_bytes()))
            .transpose()
    }

    /// The files that describe the tokenizer and generation beside the weights, as `(name, bytes)`, for an HF
    /// output: an HF folder's [`SIDE_FILES`] that exist, verbatim; for a GGUF input, the chat template and end
    /// tokens of its metadata written as transformers reads them.
    pub fn side_files(&self) -> Result<Vec<SideFile>> {
        match self.files {
            Files::Gguf(_) => Ok(hf_side_files(
                &self.gguf_metadata()?,
                self.tokenizer_json()?.as_ref(),
            )),
            Files::Hf { .. } => SIDE_FILES
                .iter()
                .filter(|name| self.path.join(name).is_file())
                .map(|name| Ok((name.to_string(), read(&self.path.join(name))?)))
                .collect(),
        }
    }

    /// The ids that end a text (see [`stop_ids`]).
    pub fn stop_ids(&self) -> Result<Vec<u32>> {
        stop_ids(
            &self.config,
            self.hf_config_json()?.as_ref(),
            &self.side_files()?,
        )
    }

    /// A JSON file of an HF folder, parsed; `None` when the folder has no such file.
    fn json_file(&self, name: &str) -> Result<Option<Json>> {
        let path = self.path.join(name);
        if !path.is_file() {
            return Ok(None);
        }
        parse_json(&read(&path)?, name).map(Some)
    }

    /// Metadata a GGUF input carries that outputs keep (general.* and tokenizer.*).
    pub fn gguf_metadata(&self) -> Result<Vec<(String, Value)>> {
        match &self.files {
            Files::Gguf(m) => Ok(carried(&GgufModel::parse(m)?.file)),
            Files::Hf { .. } => Ok(vec![]),
        }
    }
}

/// The weight files of an HF folder, as transformers finds them: the shards the index names, else
/// `model.safetensors`.
fn weight_files(dir: &Path, index: Option<&[u8]>) -> Result<Vec<String>> {
    if let Some(index) = index {
        let v: Json = parse_json(index, "model.safetensors.index.json")?;
        let map = v["weight_map"].as_object().ok_or_else(|| Error::Json {
            what: "model.safetensors.index.json".into(),
            message: "no weight_map object".into(),
        })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(String::from))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    if dir.join("model.safetensors").is_file() {
        return Ok(vec!["model.safetensors".into()]);
    }
    Err(Error::Invalid(format!(
        "{} has neither model.safetensors nor model.safetensors.index.json",
        dir.display()
    )))
}
