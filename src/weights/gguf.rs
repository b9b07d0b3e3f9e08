//! GGUF files (version 2 and 3): memory-mapped metadata, tensor infos and tensor data.

use crate::{Error, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// GGML tensor types this reader knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Bf16,
    /// Any other type id (reported by number).
    Other(u32),
}

impl GgmlType {
    pub fn from_id(id: u32) -> GgmlType {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::Bf16,
            other => GgmlType::Other(other),
        }
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> Option<(usize, usize)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::Bf16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q2K => (256, 84),
            GgmlType::Q3K => (256, 110),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
            GgmlType::Other(_) => return None,
        })
    }
}

/// llama.cpp's names of `general.file_type` values (`enum llama_ftype`).
fn file_type_name(id: u64) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

/// One tensor's entry.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub ty: GgmlType,
    /// GGML order: dims\[0\] is the innermost (columns of a matrix).
    pub dims: Vec<usize>,
    /// Byte range in the file.
    pub start: usize,
    pub end: usize,
}

/// A mapped GGUF file.
pub struct Gguf {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    pub tensors: HashMap<String, TensorInfo>,
    map: Mmap,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn fail(&self, what: &str) -> Error {
        Error::Checkpoint {
            path: self.path.display().to_string(),
            message: format!("not a valid GGUF file: {what} at byte {}", self.pos),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| self.fail("truncated header"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn len(&mut self) -> Result<usize> {
        let n = self.u64()?;
        if n > self.data.len() as u64 {
            return Err(self.fail("length beyond the file"));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.len()?;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    fn value(&mut self, ty: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U64(self.take(1)?[0] as u64),
            1 => Value::I64(self.take(1)?[0] as i8 as i64),
            2 => Value::U64(u16::from_le_bytes(self.take(2)?.try_into().expect("2")) as u64),
            3 => Value::I64(i16::from_le_bytes(self.take(2)?.try_into().expect("2")) as i64),
            4 => Value::U64(self.u32()? as u64),
            5 => Value::I64(self.u32()? as i32 as i64),
            6 => Value::F64(f32::from_bits(self.u32()?) as f64),
            7 => Value::Bool(self.take(1)?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                let inner = self.u32()?;
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(inner)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => return Err(self.fail(&format!("unknown metadata type {other}"))),
        })
    }
}

impl Gguf {
    pub fn open(path: &Path) -> Result<Gguf> {
        let io = |e: std::io::Error| Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: mapped read-only; the file is not modified while the engine runs.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let mut c = Cursor {
            data: &map,
            pos: 0,
            path,
        };
        if c.take(4)? != b"GGUF" {
            return Err(c.fail("no GGUF magic"));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(c.fail(&format!("unsupported version {version} (2 and 3 are read)")));
        }
        let n_tensors = c.len()?;
        let n_kv = c.len()?;
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            metadata.insert(key, c.value(ty)?);
        }
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()? as usize;
            if n_dims > 4 {
                return Err(c.fail(&format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let dims = (0..n_dims).map(|_| c.len()).collect::<Result<Vec<_>>>()?;
            let ty = GgmlType::from_id(c.u32()?);
            let offset = c.u64()? as usize;
            infos.push((name, dims, ty, offset));
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(|v| v.as_u64())
            .unwrap_or(32)
            .max(1) as usize;
        let data_start = c.pos.next_multiple_of(alignment);
        let mut tensors = HashMap::new();
        for (name, dims, ty, offset) in infos {
            let elements: usize = dims.iter().product();
            let bytes = match ty.block() {
                Some((per, size)) if elements.is_multiple_of(per) => elements / per * size,
                _ => 0,
            };
            let start = data_start + offset;
            let end = start + bytes;
            if end > map.len() {
                return Err(Error::Checkpoint {
                    path: path.display().to_string(),
                    message: format!(
                        "truncated: tensor `{name}` ends at byte {end}, the file has {}",
                        map.len()
                    ),
                });
            }
            tensors.insert(
                name,
                TensorInfo {
                    ty,
                    dims,
                    start,
                    end,
                },
            );
        }
        Ok(Gguf {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            map,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// Bytes of tensor data in the file.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| (t.end - t.start) as u64)
            .sum()
    }

    /// The file's type as llama.cpp names it (`Q4_K_M`): `general.file_type` when the file
    /// has it, else the type holding most of the tensor bytes.
    pub fn file_type(&self) -> String {
        if let Some(name) = self
            .get("general.file_type")
            .and_then(Value::as_u64)
            .and_then(file_type_name)
        {
            return name.to_string();
        }
        let mut by_type: Vec<(GgmlType, u64)> = vec![];
        for t in self.tensors.values() {
            let bytes = (t.end - t.start) as u64;
            match by_type.iter_mut().find(|(ty, _)| *ty == t.ty) {
                Some(e) => e.1 += bytes,
                None => by_type.push((t.ty, bytes)),
            }
        }
        by_type
            .iter()
            .max_by_key(|e| e.1)
            .map(|(ty, _)| format!("{ty:?}").to_uppercase().replace("K", "_K"))
            .unwrap_or_else(|| "unknown".into())
    }

    /// The tensor `name`: its entry and bytes.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self.tensors.get(name).ok_or_else(|| Error::Tensor {
            name: name.to_string(),
            message: format!("missing from {}", self.path.display()),
        })?;
        if info.ty.block().is_none() {
            return Err(Error::Tensor {
                name: name.to_string(),
                message: format!("unsupported GGML type {:?}", info.ty),
            });
        }
        Ok((info, &self.map[info.start..info.end]))
    }
}
