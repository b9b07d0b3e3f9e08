//! Hugging Face repos: safetensors checkpoints and GGUF files, found in the local hub cache
//! (laid out as the hub's own clients write it) or downloaded into it.

use super::{Entry, Store};
use crate::error::printable;
use crate::files::{MAX_JSON_BYTES, check_plain_name, read_text};
use crate::weights::safetensors::shard_names;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The quantizations tried, in order, when a GGUF repo is named without one (llama.cpp's
/// choice first).
const DEFAULT_QUANTS: &[&str] = &["Q4_K_M", "Q4_0", "Q8_0"];

fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// The repo's snapshots, the one `refs/main` names first.
fn snapshots(cache: &Path, repo: &str) -> Vec<PathBuf> {
    let dir = repo_dir(cache, repo);
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort_by_key(|p| std::cmp::Reverse(p.metadata().and_then(|m| m.modified()).ok()));
    // A revision is one plain name (a commit hash): anything else is not followed.
    if let Ok(rev) = read_text(&dir.join("refs/main"), 4096)
        && check_plain_name(rev.trim(), "revision").is_ok()
    {
        let main = dir.join("snapshots").join(rev.trim());
        found.retain(|p| p != &main);
        found.insert(0, main);
    }
    found
}

/// The snapshot of `repo` (owner/name) in `cache` that holds a config.json: the revision
/// `refs/main` names, else the most recent one.
pub fn cached_snapshot(cache: &Path, repo: &str) -> Option<PathBuf> {
    snapshots(cache, repo)
        .into_iter()
        .find(|s| s.join("config.json").exists())
}

/// The GGUF files of a snapshot, as paths relative to it (a repo may keep them in folders).
fn gguf_files(snapshot: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = format!("{prefix}{name}");
            let path = e.path();
            if path.is_dir() && depth < 3 {
                walk(&path, &format!("{rel}/"), depth + 1, out);
            } else if is_gguf(&rel) && path.is_file() {
                out.push(rel);
            }
        }
    }
    let mut out = vec![];
    walk(snapshot, "", 0, &mut out);
    out.sort();
    out
}

/// A model's GGUF file (not a vision projector's).
fn is_gguf(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".gguf") && !lower.contains("mmproj")
}

/// The quantization a GGUF file's name ends in (`gemma-2-2b-it-Q4_K_M.gguf` → `Q4_K_M`):
/// the last `-` or `.` separated part, upper-cased.
pub fn quant_of(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let stem = &base[..base.len().saturating_sub(".gguf".len())];
    stem.rsplit(['-', '.'])
        .next()
        .unwrap_or(stem)
        .to_ascii_uppercase()
}

/// Which of `files` (a repo's GGUF files) `quant` names; without one the first of
/// `DEFAULT_QUANTS` present, else the first file. A file split into parts is refused.
pub fn pick_gguf(repo: &str, files: &[String], quant: Option<&str>) -> Result<String> {
    let files: Vec<&String> = files.iter().filter(|f| is_gguf(f)).collect();
    let have = || {
        let mut q: Vec<String> = files.iter().map(|f| quant_of(f)).collect();
        q.sort();
        q.dedup();
        q.join(", ")
    };
    let err = |message: String| Error::Io {
        path: printable(repo),
        message,
    };
    if files.is_empty() {
        return Err(err(
            "holds neither a config.json with safetensors nor a GGUF file".into(),
        ));
    }
    let by_quant = |q: &str| files.iter().find(|f| quant_of(f).eq_ignore_ascii_case(q));
    let chosen = match quant {
        Some(q) => by_quant(q).ok_or_else(|| {
            err(format!(
                "has no {} GGUF file (it has: {})",
                printable(q),
                have()
            ))
        })?,
        None => DEFAULT_QUANTS
            .iter()
            .find_map(|q| by_quant(q))
            .unwrap_or(&files[0]),
    };
    let split = chosen.len() > 20 && {
        let tail = &chosen[chosen.len() - 20..];
        tail.starts_with('-') && tail[6..10].eq_ignore_ascii_case("-of-")
    };
    if split {
        return Err(err(format!(
            "`{}` is split into parts; join them first (llama-gguf-split --merge)",
            printable(chosen)
        )));
    }
    for part in chosen.split('/') {
        check_plain_name(part, "GGUF file").map_err(err)?;
    }
    Ok(chosen.to_string())
}

/// A cached GGUF file of `repo` that `quant` names (see [`pick_gguf`]).
fn cached_gguf(cache: &Path, repo: &str, quant: Option<&str>) -> Option<PathBuf> {
    snapshots(cache, repo).into_iter().find_map(|s| {
        let name = pick_gguf(repo, &gguf_files(&s), quant).ok()?;
        Some(s.join(name))
    })
}

/// `repo`'s model in a hub cache: a GGUF file when `quant` is given or the repo holds no
/// safetensors checkpoint, else the checkpoint's snapshot; downloaded when not cached.
pub fn pull(store: &Store, repo: &str, quant: Option<&str>) -> Result<PathBuf> {
    for cache in &store.hub_caches {
        if quant.is_none()
            && let Some(found) = cached_snapshot(cache, repo)
        {
            return Ok(found);
        }
        if let Some(found) = cached_gguf(cache, repo, quant) {
            return Ok(found);
        }
    }
    let caches = || {
        store
            .hub_caches
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if store.offline {
        return Err(Error::Io {
            path: repo.to_string(),
            message: format!(
                "not in the Hugging Face cache ({}), and HF_HUB_OFFLINE forbids downloading it",
                caches()
            ),
        });
    }
    download(store, repo, quant, &caches())
}

fn api(store: &Store) -> Result<hf_hub::api::sync::Api> {
    use std::io::IsTerminal;
    let cache = store
        .hub_caches
        .first()
        .cloned()
        .unwrap_or_else(|| store.cache.join("hub"));
    // The token: $HF_TOKEN, else the one `huggingface-cli login` saved beside the cache.
    let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache))
        .with_endpoint(store.hub_endpoint.clone())
        .with_progress(std::io::stderr().is_terminal());
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    builder.build().map_err(|e| Error::Io {
        path: store.hub_endpoint.clone(),
        message: e.to_string(),
    })
}

/// Downloads `repo`'s model into the first hub cache (HF_TOKEN for gated repos): its
/// safetensors checkpoint with config and tokenizer, or the GGUF file `quant` picks.
fn download(store: &Store, repo: &str, quant: Option<&str>, caches: &str) -> Result<PathBuf> {
    let r = api(store)?.model(repo.to_string());
    let failed = |e: hf_hub::api::sync::ApiError| Error::Io {
        path: repo.to_string(),
        message: format!("not in the Hugging Face cache ({caches}) and the download failed: {e}"),
    };
    let info = r.info().map_err(failed)?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let has = |f: &str| files.iter().any(|x| x == f);
    let checkpoint =
        has("config.json") && (has("model.safetensors") || has("model.safetensors.index.json"));
    if quant.is_some() || !checkpoint {
        let name = pick_gguf(repo, &files, quant)?;
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("downloading {repo}/{name}");
        }
        return r.get(&name).map_err(failed);
    }
    let config = r.get("config.json").map_err(failed)?;
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        r.get(f).map_err(failed)?;
    }
    if has("generation_config.json") {
        r.get("generation_config.json").map_err(failed)?;
    }
    if has("model.safetensors.index.json") {
        let index = r.get("model.safetensors.index.json").map_err(failed)?;
        // Every shard name is checked before the first is requested.
        let text = read_text(&index, MAX_JSON_BYTES)?;
        for s in shard_names(&text, &index)? {
            r.get(&s).map_err(failed)?;
        }
    } else {
        r.get("model.safetensors").map_err(failed)?;
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Bytes on disk under `path` (symbolic links followed, as the hub cache's snapshots
/// point into its blobs).
fn disk_size(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| disk_size(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// What a snapshot file deletes: the link and, when nothing else in the repo links to it,
/// the blob it points at.
fn file_and_blob(repo_dir: &Path, snapshots: &[PathBuf], file: &Path) -> Vec<PathBuf> {
    let mut out = vec![file.to_path_buf()];
    if let Ok(blob) = std::fs::canonicalize(file)
        && blob.starts_with(repo_dir.join("blobs").canonicalize().unwrap_or_default())
    {
        let mut others = 0;
        for s in snapshots {
            for f in gguf_files(s) {
                let p = s.join(f);
                if p != file && std::fs::canonicalize(&p).ok().as_ref() == Some(&blob) {
                    others += 1;
                }
            }
        }
        if others == 0 {
            // The hub client leaves a lock file beside each blob it wrote.
            let lock = blob.with_extension("lock");
            out.push(blob);
            if lock.exists() {
                out.push(lock);
            }
        }
    }
    out
}

/// Every model in a hub cache: one entry per safetensors snapshot (`owner/repo`) and per
/// GGUF file (`owner/repo:QUANT`), from the snapshot `refs/main` names first.
pub fn cached_models(cache: &Path) -> Vec<Entry> {
    let mut out = vec![];
    let Ok(dirs) = std::fs::read_dir(cache) else {
        return out;
    };
    let mut dirs: Vec<PathBuf> = dirs.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let Some(repo) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("models--"))
            .map(|n| n.replacen("--", "/", 1))
        else {
            continue;
        };
        if let Some(snap) = cached_snapshot(cache, &repo) {
            let dtype = read_text(&snap.join("config.json"), MAX_JSON_BYTES)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["torch_dtype"].as_str().map(str::to_string))
                .unwrap_or_else(|| "safetensors".into());
            out.push(Entry {
                name: repo.clone(),
                size: disk_size(&snap),
                kind: dtype,
                path: snap,
                remove: vec![dir.clone()],
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        let snaps = snapshots(cache, &repo);
        for snap in &snaps {
            for f in gguf_files(snap) {
                let quant = quant_of(&f);
                if !seen.insert(quant.clone()) {
                    continue;
                }
                let path = snap.join(&f);
                out.push(Entry {
                    name: format!("{repo}:{quant}"),
                    size: disk_size(&path),
                    kind: super::gguf_kind(&path),
                    remove: file_and_blob(&dir, &snaps, &path),
                    path,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_files_are_picked_by_quantization() {
        let files: Vec<String> = [
            "README.md",
            "gemma-2-2b-it-Q8_0.gguf",
            "gemma-2-2b-it-Q4_K_M.gguf",
            "gemma-2-2b-it-UD-Q4_K_XL.gguf",
            "mmproj-F16.gguf",
            "big/gemma-27b-Q6_K-00001-of-00002.gguf",
        ]
        .map(String::from)
        .to_vec();
        let pick = |q| pick_gguf("a/b", &files, q);
        assert_eq!(pick(None).unwrap(), "gemma-2-2b-it-Q4_K_M.gguf");
        assert_eq!(pick(Some("q8_0")).unwrap(), "gemma-2-2b-it-Q8_0.gguf");
        assert_eq!(
            pick(Some("Q4_K_XL")).unwrap(),
            "gemma-2-2b-it-UD-Q4_K_XL.gguf"
        );
        let e = pick(Some("Q5_K_M")).unwrap_err().to_string();
        assert!(
            e.contains("has no Q5_K_M") && e.contains("Q4_K_M, Q4_K_XL, Q8_0"),
            "{e}"
        );
        // The projector is never taken for the model.
        assert!(pick(Some("F16")).is_err());
        let e = pick(Some("00002")).unwrap_err().to_string();
        assert!(e.contains("split into parts"), "{e}");
        let e = pick_gguf("a/b", &["../x.gguf".into()], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a plain file name"), "{e}");
        let e = pick_gguf("a/b", &["README.md".into()], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither"), "{e}");
    }
}
