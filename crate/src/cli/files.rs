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
    String::from_utf8(read(path)?).map_err(|_| Error::Text(format!("{} is not UTF-8 text", path.display())))
}

/// An HF model folder with its safetensors mapped into memory.
pub struct ModelFolder {
    pub dir: PathBuf,
    pub config_json: Vec<u8>,
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
        let io_err = |source| Error::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        names.sort();
        let mut maps = Vec::new();
        for path in names {
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
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            maps.push((name, map));
        }
        let index_path = dir.join("model.safetensors.index.json");
        let index = index_path.exists().then(|| read(&index_path)).transpose()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config_json,
            config,
            maps,
            index,
        })
    }

    /// The weights, parsed from the mapped files.
    pub fn weights(&self) -> Result<SafetensorsWeights<'_>> {
        let files: Vec<(String, &[u8])> = self.maps.iter().map(|(n, m)| (n.clone(), &m[..])).collect();
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
