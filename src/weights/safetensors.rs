//! Hugging Face safetensors checkpoints: one `model.safetensors` or the shards listed in
//! `model.safetensors.index.json`, memory-mapped so no tensor is copied until it is used.

use super::SourceDtype;
use crate::{Error, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

struct Entry {
    shard: usize,
    dtype: SourceDtype,
    shape: Vec<usize>,
    /// Byte range within the shard file.
    start: usize,
    end: usize,
}

/// A tensor borrowed from the mapped file.
pub struct Tensor<'a> {
    pub name: &'a str,
    pub dtype: SourceDtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

/// The tensors of a checkpoint directory, mapped.
pub struct Checkpoint {
    files: Vec<(PathBuf, Mmap)>,
    entries: HashMap<String, Entry>,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn corrupt(path: &Path, message: String) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        message,
    }
}

impl Checkpoint {
    /// Opens `dir/model.safetensors.index.json` (sharded) or `dir/model.safetensors`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let index = dir.join("model.safetensors.index.json");
        let shard_names: Vec<String> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| io_error(&index, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| corrupt(&index, e.to_string()))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| corrupt(&index, "no `weight_map` object".into()))?;
            let mut names: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            names.sort();
            names.dedup();
            names
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                return Err(io_error(
                    dir,
                    "no model.safetensors or model.safetensors.index.json in this directory",
                ));
            }
            vec!["model.safetensors".into()]
        };
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (shard, name) in shard_names.iter().enumerate() {
            let path = dir.join(name);
            let file = std::fs::File::open(&path).map_err(|e| io_error(&path, e))?;
            // SAFETY: the file is opened read-only and not modified while mapped; a file
            // changed underneath us is outside what any reader can defend against.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| io_error(&path, e))?;
            let (header, meta) = safetensors::SafeTensors::read_metadata(&map)
                .map_err(|e| corrupt(&path, format!("not a valid safetensors file ({e})")))?;
            let data_start = 8 + header;
            for (tensor, info) in meta.tensors() {
                let dtype = match info.dtype {
                    safetensors::Dtype::F32 => SourceDtype::F32,
                    safetensors::Dtype::F16 => SourceDtype::F16,
                    safetensors::Dtype::BF16 => SourceDtype::Bf16,
                    other => {
                        return Err(Error::Tensor {
                            name: tensor,
                            message: format!(
                                "unsupported dtype {other:?} in {}; expected F32, F16 or BF16",
                                path.display()
                            ),
                        });
                    }
                };
                let (start, end) = (
                    data_start + info.data_offsets.0,
                    data_start + info.data_offsets.1,
                );
                let elements: usize = info.shape.iter().product();
                if end > map.len() {
                    return Err(corrupt(
                        &path,
                        format!(
                            "truncated: tensor `{tensor}` ends at byte {end}, the file has {}",
                            map.len()
                        ),
                    ));
                }
                if end - start != elements * dtype.bytes() {
                    return Err(corrupt(
                        &path,
                        format!(
                            "tensor `{tensor}`: {} bytes for shape {:?}",
                            end - start,
                            info.shape
                        ),
                    ));
                }
                entries.insert(
                    tensor,
                    Entry {
                        shard,
                        dtype,
                        shape: info.shape.clone(),
                        start,
                        end,
                    },
                );
            }
            files.push((path, map));
        }
        Ok(Checkpoint { files, entries })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The tensor `name`, checked to have `shape`.
    pub fn tensor<'a>(&'a self, name: &'a str, shape: &[usize]) -> Result<Tensor<'a>> {
        let e = self.entries.get(name).ok_or_else(|| Error::Tensor {
            name: name.to_string(),
            message: "missing from the checkpoint".into(),
        })?;
        if e.shape != shape {
            return Err(Error::Tensor {
                name: name.to_string(),
                message: format!("expected shape {shape:?}, found {:?}", e.shape),
            });
        }
        Ok(Tensor {
            name,
            dtype: e.dtype,
            shape: &e.shape,
            bytes: &self.files[e.shard].1[e.start..e.end],
        })
    }

    /// Total bytes of tensor data.
    pub fn bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| (e.end - e.start) as u64)
            .sum()
    }
}

impl Tensor<'_> {
    /// The values widened to f32 (exact for every source dtype).
    pub fn to_f32(&self) -> Vec<f32> {
        let b = self.bytes;
        match self.dtype {
            SourceDtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            SourceDtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            SourceDtype::Bf16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}
