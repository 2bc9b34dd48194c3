//! A model on disk: an HF folder (`config.json`, one or more `*.safetensors`, optional index and
//! `tokenizer.json`). Safetensors files are memory-mapped, never read whole.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::io::{SafetensorsWeights, Tokenizer};
use crate::model::ModelConfig;

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

/// An HF model folder with its safetensors mapped into memory.
pub struct ModelFolder {
    pub dir: PathBuf,
    pub config: ModelConfig,
    maps: Vec<(String, Mmap)>,
    index: Option<Vec<u8>>,
}

impl ModelFolder {
    /// Opens `dir`, parses `config.json` and maps every `*.safetensors`.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "{} is not a model folder (expected a directory with config.json and *.safetensors)",
                dir.display()
            )));
        }
        let config_json = read(&dir.join("config.json"))?;
        let config = ModelConfig::from_json(&config_json)?;
        let index_path = dir.join("model.safetensors.index.json");
        let index = index_path.exists().then(|| read(&index_path)).transpose()?;
        let names = weight_files(dir, index.as_deref())?;
        let mut maps = Vec::new();
        for path in names.into_iter().map(|n| dir.join(n)) {
            let file = std::fs::File::open(&path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?;
            // SAFETY: the file is opened read-only and never written by us while mapped; another process
            // truncating it under us is the one hazard memory maps share with every mmap-based loader.
            let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            maps.push((name, map));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            maps,
            index,
        })
    }

    /// The weights, parsed from the mapped files.
    pub fn weights(&self) -> Result<SafetensorsWeights<'_>> {
        let files: Vec<(String, &[u8])> =
            self.maps.iter().map(|(n, m)| (n.clone(), &m[..])).collect();
        SafetensorsWeights::from_files(&files, self.index.as_deref())
    }

    /// `tokenizer.json`, if the folder has one.
    pub fn tokenizer(&self) -> Result<Option<Tokenizer>> {
        let path = self.dir.join("tokenizer.json");
        match path.exists() {
            true => Ok(Some(Tokenizer::from_json(&read(&path)?)?)),
            false => Ok(None),
        }
    }
}

/// The weight files of an HF folder, as transformers finds them: the shards the index names, else
/// `model.safetensors`.
fn weight_files(dir: &Path, index: Option<&[u8]>) -> Result<Vec<String>> {
    if let Some(index) = index {
        let v: serde_json::Value = serde_json::from_slice(index).map_err(|e| Error::Json {
            what: "model.safetensors.index.json".into(),
            message: e.to_string(),
        })?;
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
