//! Checkpoints: the weights as safetensors (`model.safetensors`) with the configuration that
//! built the model as JSON beside them (`config.json`), so a checkpoint explains itself and a
//! mismatch between the two is caught on loading.
//!
//! Parameter names are the networks' PyTorch-style names (`layers.0.block.2.weight`, …), so the
//! weights can move to and from PyTorch's `safetensors.torch.load_file`.

use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;

/// File name of the weights inside a checkpoint folder.
pub const WEIGHTS: &str = "model.safetensors";
/// File name of the configuration inside a checkpoint folder.
pub const CONFIG: &str = "config.json";

fn checkpoint_error(path: &Path, why: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// What [`save`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The weights file.
    pub weights: PathBuf,
    /// Its size in bytes.
    pub weights_bytes: u64,
    /// The configuration file.
    pub config: PathBuf,
}

/// Whether a configuration field holds its default: serde's `skip_serializing_if` for options
/// added after checkpoints were saved, so that a `config.json` written today where the option is
/// left at its default is the JSON older versions wrote (and read). A resumed run reads the
/// saved configuration through its type before comparing it
/// ([`crate::training::Checkpointing::typed`]), so resuming does not depend on this.
pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Creates `dir` and its parents.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })
}

/// Writes `path` through `write`, which is given a temporary path beside it; the file is then
/// renamed into place, so a reader sees the old file or the new one, never a half-written one.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    // The temporary name keeps the extension: tch picks the weights' format by it.
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let ext = path.extension().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{stem}.tmp-{}.{ext}", std::process::id()));
    let written = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes `vs`'s variables to `dir/model.safetensors` and `config` (with `meta`, e.g. the
/// epoch and the training history) to `dir/config.json`, creating `dir`. Each file is written
/// atomically ([`write_atomically`]).
pub fn save(
    dir: impl AsRef<Path>,
    vs: &VarStore,
    config: &impl Serialize,
    meta: serde_json::Value,
) -> Result<Saved> {
    let dir = dir.as_ref();
    create_dir(dir)?;
    let weights = dir.join(WEIGHTS);
    write_atomically(&weights, |tmp| vs.save(tmp).map_err(Error::from))?;
    let config_path = dir.join(CONFIG);
    let doc = serde_json::to_string_pretty(&serde_json::json!({ "config": config, "meta": meta }))?;
    write_atomically(&config_path, |tmp| {
        std::fs::write(tmp, &doc).map_err(|source| Error::Io {
            path: tmp.display().to_string(),
            source,
        })
    })?;
    let weights_bytes = std::fs::metadata(&weights)
        .map_err(|source| Error::Io {
            path: weights.display().to_string(),
            source,
        })?
        .len();
    Ok(Saved {
        weights,
        weights_bytes,
        config: config_path,
    })
}

/// Reads the configuration (and the meta data) of a checkpoint.
pub fn load_config<C: DeserializeOwned>(dir: impl AsRef<Path>) -> Result<(C, serde_json::Value)> {
    let path = dir.as_ref().join(CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| checkpoint_error(&path, format!("not valid JSON: {e}")))?;
    let config = serde_json::from_value(doc["config"].take())
        .map_err(|e| checkpoint_error(&path, format!("the configuration does not fit: {e}")))?;
    Ok((config, doc["meta"].take()))
}

/// Loads the weights of a checkpoint into `vs`, which must hold exactly the same variables
/// with the same shapes (build the model from the checkpoint's config first). Any missing,
/// extra or differently shaped tensor, or a file that is not safetensors, is an error that
/// names it; `vs` is left untouched then.
pub fn load_weights(dir: impl AsRef<Path>, vs: &mut VarStore) -> Result<()> {
    let path = dir.as_ref().join(WEIGHTS);
    if !path.exists() {
        return Err(Error::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let stored = tch::Tensor::read_safetensors(&path)
        .map_err(|e| checkpoint_error(&path, format!("not a readable safetensors file ({e})")))?;
    let stored: std::collections::HashMap<String, tch::Tensor> = stored.into_iter().collect();
    let vars = vs.variables();
    let mut problems = Vec::new();
    for (name, var) in &vars {
        match stored.get(name) {
            None => problems.push(format!("missing {name}")),
            Some(t) if t.size() != var.size() => problems.push(format!(
                "{name} has shape {:?} in the file, {:?} in the model",
                t.size(),
                var.size()
            )),
            Some(_) => {}
        }
    }
    let mut extra: Vec<&String> = stored.keys().filter(|k| !vars.contains_key(*k)).collect();
    extra.sort();
    problems.extend(extra.into_iter().map(|k| format!("unexpected {k}")));
    if !problems.is_empty() {
        problems.sort();
        return Err(checkpoint_error(
            &path,
            format!("does not match the model: {}", problems.join("; ")),
        ));
    }
    tch::no_grad(|| {
        for (name, mut var) in vars {
            var.copy_(&stored[&name].to_device(var.device()).to_kind(var.kind()));
        }
    });
    Ok(())
}
