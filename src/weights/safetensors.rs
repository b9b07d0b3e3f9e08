//! Hugging Face safetensors checkpoints: one `model.safetensors` or the shards listed in
//! `model.safetensors.index.json`, memory-mapped so no tensor is copied until it is used.

use super::SourceDtype;
use crate::error::{printable, printable_message};
use crate::files::{MAX_JSON_BYTES, check_plain_name, open_regular, read_text_if_present};
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

/// One tensor of a safetensors header, checked against its file.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderEntry {
    pub name: String,
    pub dtype: SourceDtype,
    pub shape: Vec<usize>,
    /// Byte range within the file.
    pub start: usize,
    pub end: usize,
}

/// The safetensors crate's limit on a header.
const MAX_HEADER_BYTES: u64 = 100_000_000;

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

/// Reads and checks the header of a safetensors file of `file_len` bytes from `prefix`, its
/// first bytes (at least the 8-byte length and the JSON header): the rules of
/// `safetensors::SafeTensors::read_metadata` (tensors packed in order, each the size of its
/// shape, the data ending where the file does), without needing the data in memory. Only
/// f32, f16 and bf16 tensors are accepted. `path` names the file in errors.
pub fn parse_header(path: &Path, prefix: &[u8], file_len: u64) -> Result<Vec<HeaderEntry>> {
    let data_start = data_start(path, prefix, file_len)?;
    let meta = header_metadata(path, prefix, data_start)?;
    check_data_len(path, data_start, meta.data_len() as u64, file_len)?;
    let mut entries = Vec::new();
    for tensor in meta.offset_keys() {
        let Some(info) = meta.info(&tensor) else {
            continue;
        };
        entries.push(header_entry(path, data_start as usize, tensor, info)?);
    }
    Ok(entries)
}

/// The error of a file that breaks the format's rules, saying `what`.
fn invalid(path: &Path, what: String) -> Error {
    corrupt(path, format!("not a valid safetensors file ({what})"))
}

/// Where the data starts: after the 8-byte header length and the header, within the file.
fn data_start(path: &Path, prefix: &[u8], file_len: u64) -> Result<u64> {
    let Some(len_bytes) = prefix.get(..8) else {
        return Err(invalid(
            path,
            "shorter than its 8-byte header length".into(),
        ));
    };
    let mut n = [0; 8];
    n.copy_from_slice(len_bytes);
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES {
        return Err(invalid(
            path,
            format!("a header of {n} bytes, more than {MAX_HEADER_BYTES}"),
        ));
    }
    // n <= 1e8: no overflow below.
    let data_start = 8 + n;
    if data_start > file_len {
        return Err(corrupt(
            path,
            format!("truncated: the header ends at byte {data_start}, the file has {file_len}"),
        ));
    }
    Ok(data_start)
}

/// Parses the JSON header, bytes 8 to `data_start` of `prefix`.
fn header_metadata(
    path: &Path,
    prefix: &[u8],
    data_start: u64,
) -> Result<safetensors::tensor::Metadata> {
    let header = prefix
        .get(8..data_start as usize)
        .ok_or_else(|| invalid(path, "the header was not read whole".into()))?;
    let header = std::str::from_utf8(header).map_err(|e| invalid(path, format!("header: {e}")))?;
    serde_json::from_str(header).map_err(|e| invalid(path, printable_message(&e.to_string())))
}

/// Refuses data of `data_len` bytes from `data_start` that does not end where the file does.
fn check_data_len(path: &Path, data_start: u64, data_len: u64, file_len: u64) -> Result<()> {
    let data_end = data_start.checked_add(data_len);
    if data_end != Some(file_len) {
        return Err(corrupt(
            path,
            if data_end.is_none_or(|e| e > file_len) {
                format!(
                    "truncated: the header describes {data_len} bytes of data, the file has {} \
                     after the header",
                    file_len - data_start
                )
            } else {
                format!(
                    "not a valid safetensors file ({} bytes follow the {data_len} bytes of data)",
                    file_len - data_start - data_len
                )
            },
        ));
    }
    Ok(())
}

/// The f32, f16 or bf16 dtype of `tensor`; any other is refused.
fn source_dtype(path: &Path, tensor: &str, dtype: safetensors::Dtype) -> Result<SourceDtype> {
    match dtype {
        safetensors::Dtype::F32 => Ok(SourceDtype::F32),
        safetensors::Dtype::F16 => Ok(SourceDtype::F16),
        safetensors::Dtype::BF16 => Ok(SourceDtype::Bf16),
        other => Err(Error::Tensor {
            name: printable(tensor),
            message: format!(
                "unsupported dtype {other:?} in {}; expected F32, F16 or BF16",
                path.display()
            ),
        }),
    }
}

/// One tensor's entry, its bytes checked against its shape.
fn header_entry(
    path: &Path,
    data_start: usize,
    tensor: String,
    info: &safetensors::tensor::TensorInfo,
) -> Result<HeaderEntry> {
    let dtype = source_dtype(path, &tensor, info.dtype)?;
    // Within the file: the data ends at file_len (checked by check_data_len).
    let (start, end) = (
        data_start + info.data_offsets.0,
        data_start + info.data_offsets.1,
    );
    let bytes = info
        .shape
        .iter()
        .try_fold(dtype.bytes(), |n, &d| n.checked_mul(d));
    if bytes != Some(end - start) {
        return Err(corrupt(
            path,
            format!(
                "tensor `{}`: {} bytes for shape {:?}",
                printable(&tensor),
                end - start,
                info.shape
            ),
        ));
    }
    Ok(HeaderEntry {
        name: tensor,
        dtype,
        shape: info.shape.clone(),
        start,
        end,
    })
}

/// The shard file names of a `model.safetensors.index.json` (its `weight_map` values), each a
/// plain file name, sorted and without repeats. `path` names the index in errors.
pub fn shard_names(index_json: &str, path: &Path) -> Result<Vec<String>> {
    let json: serde_json::Value = serde_json::from_str(index_json)
        .map_err(|e| corrupt(path, printable_message(&e.to_string())))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| corrupt(path, "no `weight_map` object".into()))?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    names.sort();
    names.dedup();
    for name in &names {
        check_plain_name(name, "shard").map_err(|m| corrupt(path, m))?;
    }
    Ok(names)
}

impl Checkpoint {
    /// Opens `dir/model.safetensors.index.json` (sharded) or `dir/model.safetensors`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let index = dir.join("model.safetensors.index.json");
        let shard_names: Vec<String> = match read_text_if_present(&index, MAX_JSON_BYTES)? {
            Some(text) => shard_names(&text, &index)?,
            None => {
                let single = dir.join("model.safetensors");
                if !single.exists() {
                    return Err(io_error(
                        dir,
                        "no model.safetensors or model.safetensors.index.json in this directory",
                    ));
                }
                vec!["model.safetensors".into()]
            }
        };
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (shard, name) in shard_names.iter().enumerate() {
            let path = dir.join(name);
            let file = open_regular(&path)?;
            // SAFETY: the file is opened read-only and not modified while mapped; a file
            // changed underneath us is outside what any reader can defend against.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| io_error(&path, e))?;
            for e in parse_header(&path, &map, map.len() as u64)? {
                if let Some(other) = entries.get(&e.name).map(|x: &Entry| x.shard) {
                    return Err(corrupt(
                        &path,
                        format!(
                            "tensor `{}` is also in {}",
                            printable(&e.name),
                            printable(&shard_names[other])
                        ),
                    ));
                }
                entries.insert(
                    e.name,
                    Entry {
                        shard,
                        dtype: e.dtype,
                        shape: e.shape,
                        start: e.start,
                        end: e.end,
                    },
                );
            }
            files.push((path, map));
        }
        Ok(Checkpoint { files, entries })
    }

    /// The shape of tensor `name`, if the checkpoint has it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| &e.shape[..])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend(header.as_bytes());
        b.resize(b.len() + data, 0);
        b
    }

    #[test]
    fn headers_are_checked_against_the_file() {
        let p = Path::new("x.safetensors");
        let h = r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
        let b = file(h, 16);
        let e = parse_header(p, &b, b.len() as u64).unwrap();
        assert_eq!((e[0].start, e[0].end), (8 + h.len(), 8 + h.len() + 16));
        // Only the header in memory, the file's length given: the same.
        assert_eq!(
            parse_header(p, &b[..8 + h.len()], b.len() as u64).unwrap(),
            e
        );
        let msg = |b: &[u8], len: usize| parse_header(p, b, len as u64).unwrap_err().to_string();
        assert!(msg(&b[..20], 20).contains("truncated: the header ends"));
        assert!(msg(&b, b.len() - 4).contains("truncated: the header describes 16 bytes"));
        assert!(msg(&b, b.len() + 4).contains("4 bytes follow"));
        let mut huge = b.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(msg(&huge, huge.len()).contains("more than 100000000"));
        // Offsets that overlap, or a shape whose size overflows.
        for bad in [
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#,
        ] {
            let b = file(bad, 16);
            assert!(msg(&b, b.len()).contains("not a valid safetensors file"));
        }
    }

    #[test]
    fn shard_names_stay_in_their_directory() {
        let p = Path::new("model.safetensors.index.json");
        let index = |shard: &str| {
            serde_json::json!({"weight_map": {"a": "model-1.safetensors", "b": shard}}).to_string()
        };
        assert_eq!(
            shard_names(&index("model-2.safetensors"), p).unwrap(),
            ["model-1.safetensors", "model-2.safetensors"]
        );
        for bad in [
            "../model.safetensors",
            "/etc/passwd",
            "a/b.safetensors",
            "m.safetensors#frag",
            "\u{1b}[2J",
        ] {
            let e = shard_names(&index(bad), p).unwrap_err().to_string();
            assert!(
                e.contains("not a plain file name") && !e.contains('\u{1b}'),
                "{e}"
            );
        }
    }
}
