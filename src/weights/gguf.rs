//! GGUF files (version 2 and 3): memory-mapped metadata, tensor infos and tensor data.
//!
//! Every count, length, offset and size read from the file is checked before it is used:
//! counts against the bytes left to hold them, sums and products with checked arithmetic.
//! The tensor table must be what llama.cpp accepts: unique names, known types, whole blocks
//! per row, offsets that are multiples of `general.alignment` (a power of two up to
//! [`MAX_ALIGNMENT`]), data inside the data section and no two tensors overlapping.

use crate::error::printable;
use crate::formats::{HostMatrix, WeightFormat};
use crate::{Error, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};

/// Largest `general.alignment` accepted (writers use 32; a page is 4 KiB, a huge page 2 MiB
/// would be a file of its own).
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// Deepest nesting of metadata arrays (GGUF writers nest none).
pub const MAX_ARRAY_DEPTH: usize = 4;
/// GGML's limit on a tensor's dimensions.
pub const MAX_DIMS: usize = 4;
/// The metadata and tensor table must end within this many bytes of the file's start
/// (Gemma 3's, with its 262144 tokens, end at 6.5 MB). Parsed, they take a few times their
/// size in memory: this bounds that memory however large (or sparse) the file is.
pub const MAX_HEADER_BYTES: usize = 64 << 20;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

/// A metadata array, its elements kept at their own width (a u8 array costs a byte per
/// element, not an enum's 32).
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a [`Value`] (integers widened, strings and arrays cloned).
    pub fn get(&self, i: usize) -> Option<Value> {
        Some(match self {
            Array::U8(v) => Value::U64(*v.get(i)? as u64),
            Array::I8(v) => Value::I64(*v.get(i)? as i64),
            Array::U16(v) => Value::U64(*v.get(i)? as u64),
            Array::I16(v) => Value::I64(*v.get(i)? as i64),
            Array::U32(v) => Value::U64(*v.get(i)? as u64),
            Array::I32(v) => Value::I64(*v.get(i)? as i64),
            Array::U64(v) => Value::U64(*v.get(i)?),
            Array::I64(v) => Value::I64(*v.get(i)?),
            Array::F32(v) => Value::F64(*v.get(i)? as f64),
            Array::F64(v) => Value::F64(*v.get(i)?),
            Array::Bool(v) => Value::Bool(*v.get(i)?),
            Array::String(v) => Value::String(v.get(i)?.clone()),
            Array::Array(v) => Value::Array(v.get(i)?.clone()),
        })
    }

    /// The elements in order, as [`Array::get`] gives them.
    pub fn values(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// The elements of a string array.
    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            Array::String(v) => Some(v),
            _ => None,
        }
    }
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

    pub fn as_array(&self) -> Option<&Array> {
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

/// The GGML types this engine reads and the format each is read as: the file vocabulary's
/// one mapping (ids and block sizes are the formats' own, in [`crate::formats`]).
const READ_AS: [(GgmlType, WeightFormat); 13] = [
    (GgmlType::F32, WeightFormat::F32),
    (GgmlType::F16, WeightFormat::F16),
    (GgmlType::Bf16, WeightFormat::Bf16),
    (GgmlType::Q8_0, WeightFormat::Q8_0),
    (GgmlType::Q4_0, WeightFormat::Q4_0),
    (GgmlType::Q4_1, WeightFormat::Q4_1),
    (GgmlType::Q5_0, WeightFormat::Q5_0),
    (GgmlType::Q5_1, WeightFormat::Q5_1),
    (GgmlType::Q2K, WeightFormat::Q2K),
    (GgmlType::Q3K, WeightFormat::Q3K),
    (GgmlType::Q4K, WeightFormat::Q4K),
    (GgmlType::Q5K, WeightFormat::Q5K),
    (GgmlType::Q6K, WeightFormat::Q6K),
];

impl GgmlType {
    pub fn from_id(id: u32) -> GgmlType {
        WeightFormat::of_ggml_id(id)
            .and_then(|f| READ_AS.iter().find(|(_, g)| *g == f))
            .map_or(GgmlType::Other(id), |(t, _)| *t)
    }

    /// The format a tensor of this type is kept in on the GPU (before any expansion).
    pub fn format(self) -> Option<WeightFormat> {
        READ_AS.iter().find(|(t, _)| *t == self).map(|(_, f)| *f)
    }

    /// (elements per block, bytes per block) of the types this engine reads.
    pub fn block(self) -> Option<(usize, usize)> {
        self.format().map(|f| f.unit().block)
    }

    /// (elements per block, bytes per block) of every type ggml defines, read or not, so
    /// that any tensor's extent can be checked (ggml.c's `type_traits`).
    pub fn storage(self) -> Option<(usize, usize)> {
        self.block().or(match self {
            GgmlType::Other(id) => Some(match id {
                9 => (32, 36),     // Q8_1
                15 => (256, 292),  // Q8_K
                16 => (256, 66),   // IQ2_XXS
                17 => (256, 74),   // IQ2_XS
                18 => (256, 98),   // IQ3_XXS
                19 => (256, 50),   // IQ1_S
                20 => (32, 18),    // IQ4_NL
                21 => (256, 110),  // IQ3_S
                22 => (256, 82),   // IQ2_S
                23 => (256, 136),  // IQ4_XS
                24 => (1, 1),      // I8
                25 => (1, 2),      // I16
                26 => (1, 4),      // I32
                27 | 28 => (1, 8), // I64, F64
                29 => (256, 56),   // IQ1_M
                34 => (256, 54),   // TQ1_0
                35 => (256, 66),   // TQ2_0
                39 => (32, 17),    // MXFP4
                _ => return None,
            }),
            _ => None,
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

/// The bytes a [`Gguf`] reads from.
enum Bytes {
    Mapped(Mmap),
    /// A copy: a whole file, or only its first bytes (see [`Gguf::parse_header`]).
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A GGUF file: its metadata and tensor table, checked, and its bytes.
pub struct Gguf {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    pub tensors: HashMap<String, TensorInfo>,
    bytes: Bytes,
    /// The file's length (more than `bytes` holds after [`Gguf::parse_header`]).
    file_len: usize,
}

struct Cursor<'a> {
    /// The header region: the file's first bytes, at most MAX_HEADER_BYTES of them.
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
    /// Whether `data` stops at MAX_HEADER_BYTES rather than at the file's end.
    capped: bool,
}

impl<'a> Cursor<'a> {
    fn fail(&self, what: &str) -> Error {
        Error::Checkpoint {
            path: self.path.display().to_string(),
            message: format!("not a valid GGUF file: {what} at byte {}", self.pos),
        }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| {
            self.fail(if self.capped {
                "metadata and tensor table longer than 64 MiB"
            } else {
                "truncated header"
            })
        })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items that each take at least `min_each` bytes of what is left: a count
    /// the file cannot hold is refused before anything is allocated for it.
    fn count(&mut self, min_each: usize, what: &str) -> Result<usize> {
        let n = self.u64()?;
        let room = self.remaining() / min_each.max(1);
        if n > room as u64 {
            return Err(self.fail(&format!(
                "{n} {what} cannot fit in the {} bytes that follow",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.count(1, "string bytes")?;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    /// `n` little-endian numbers of `N` bytes each.
    fn numbers<const N: usize, T>(&mut self, n: usize, f: fn([u8; N]) -> T) -> Result<Vec<T>> {
        let bytes = self.take(
            n.checked_mul(N)
                .ok_or_else(|| self.fail("array too long"))?,
        )?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect())
    }

    /// Bytes an element of type `ty` takes at least (a string its length, an array its type
    /// and length).
    fn min_size(&self, ty: u32) -> Result<usize> {
        Ok(match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            other => return Err(self.fail(&format!("unknown metadata type {other}"))),
        })
    }

    fn array_value(&mut self, depth: usize) -> Result<Array> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.fail(&format!(
                "metadata arrays nested more than {MAX_ARRAY_DEPTH} deep"
            )));
        }
        let inner = self.u32()?;
        let n = self.count(self.min_size(inner)?, "array elements")?;
        Ok(match inner {
            0 => Array::U8(self.take(n)?.to_vec()),
            1 => Array::I8(self.numbers(n, i8::from_le_bytes)?),
            2 => Array::U16(self.numbers(n, u16::from_le_bytes)?),
            3 => Array::I16(self.numbers(n, i16::from_le_bytes)?),
            4 => Array::U32(self.numbers(n, u32::from_le_bytes)?),
            5 => Array::I32(self.numbers(n, i32::from_le_bytes)?),
            6 => Array::F32(self.numbers(n, f32::from_le_bytes)?),
            7 => Array::Bool(self.take(n)?.iter().map(|&b| b != 0).collect()),
            8 => Array::String((0..n).map(|_| self.string()).collect::<Result<_>>()?),
            9 => Array::Array(
                (0..n)
                    .map(|_| self.array_value(depth + 1))
                    .collect::<Result<_>>()?,
            ),
            10 => Array::U64(self.numbers(n, u64::from_le_bytes)?),
            11 => Array::I64(self.numbers(n, i64::from_le_bytes)?),
            12 => Array::F64(self.numbers(n, f64::from_le_bytes)?),
            other => return Err(self.fail(&format!("unknown metadata type {other}"))),
        })
    }

    fn value(&mut self, ty: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U64(self.take(1)?[0] as u64),
            1 => Value::I64(self.take(1)?[0] as i8 as i64),
            2 => Value::U64(u16::from_le_bytes(self.array()?) as u64),
            3 => Value::I64(i16::from_le_bytes(self.array()?) as i64),
            4 => Value::U64(self.u32()? as u64),
            5 => Value::I64(self.u32()? as i32 as i64),
            6 => Value::F64(f32::from_bits(self.u32()?) as f64),
            7 => Value::Bool(self.take(1)?[0] != 0),
            8 => Value::String(self.string()?),
            9 => Value::Array(self.array_value(0)?),
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => return Err(self.fail(&format!("unknown metadata type {other}"))),
        })
    }

    /// Reads the magic and the version, refusing any but 2 and 3.
    fn version(&mut self) -> Result<u32> {
        if self.take(4)? != b"GGUF" {
            return Err(self.fail("no GGUF magic"));
        }
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            return Err(self.fail(&format!("unsupported version {version} (2 and 3 are read)")));
        }
        Ok(version)
    }

    /// Reads `n_kv` metadata entries, refusing a repeated key.
    fn metadata(&mut self, n_kv: usize) -> Result<HashMap<String, Value>> {
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = self.string()?;
            let ty = self.u32()?;
            let value = self.value(ty)?;
            match metadata.entry(key) {
                Entry::Occupied(e) => {
                    return Err(
                        self.fail(&format!("duplicate metadata key `{}`", printable(e.key())))
                    );
                }
                Entry::Vacant(e) => {
                    e.insert(value);
                }
            }
        }
        Ok(metadata)
    }

    /// Reads the `n_tensors` entries of the tensor table.
    fn tensor_table(&mut self, n_tensors: usize) -> Result<Vec<RawTensor>> {
        // Grown as entries are read, not reserved from the count; names checked as they come,
        // so that a run of identical (zeroed) entries stops at the second.
        let mut raw = Vec::with_capacity(n_tensors.min(1024));
        let mut names = std::collections::HashSet::with_capacity(n_tensors.min(1024));
        for _ in 0..n_tensors {
            let name = self.string()?;
            if !names.insert(name.clone()) {
                return Err(self.fail(&format!("tensor `{}` is listed twice", printable(&name))));
            }
            let dims = self.dims(&name)?;
            let ty = GgmlType::from_id(self.u32()?);
            let offset = self.u64()?;
            raw.push(RawTensor {
                name,
                dims,
                ty,
                offset,
            });
        }
        Ok(raw)
    }

    /// Reads the dimension count and dimensions of tensor `name`.
    fn dims(&mut self, name: &str) -> Result<Vec<usize>> {
        let n_dims = self.u32()? as usize;
        if n_dims > MAX_DIMS {
            return Err(self.fail(&format!(
                "tensor `{}` has {n_dims} dimensions (at most {MAX_DIMS})",
                printable(name)
            )));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            let d = self.u64()?;
            // ggml keeps dimensions as int64.
            let d = usize::try_from(d)
                .ok()
                .filter(|&d| d <= i64::MAX as usize)
                .ok_or_else(|| {
                    self.fail(&format!("tensor `{}` has dimension {d}", printable(name)))
                })?;
            dims.push(d);
        }
        Ok(dims)
    }

    /// The data section's alignment: `general.alignment`, a power of two, or 32.
    fn alignment(&self, metadata: &HashMap<String, Value>) -> Result<usize> {
        Ok(match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => a as usize,
                other => {
                    let shown = match other {
                        Some(a) => a.to_string(),
                        None => printable(&format!("{v:?}")),
                    };
                    return Err(self.fail(&format!(
                        "general.alignment {shown} is not a power of two from 1 to {MAX_ALIGNMENT}"
                    )));
                }
            },
        })
    }
}

/// A tensor entry as the file gives it, before its place in the file is checked.
struct RawTensor {
    name: String,
    dims: Vec<usize>,
    ty: GgmlType,
    offset: u64,
}

/// A file's data section, where the tensor table's entries must lie.
struct DataSection<'a> {
    path: &'a Path,
    /// The first multiple of `alignment` after the header.
    data_start: usize,
    alignment: usize,
    file_len: usize,
}

impl DataSection<'_> {
    /// An error in the tensor table.
    fn bad(&self, message: String) -> Error {
        Error::Checkpoint {
            path: self.path.display().to_string(),
            message,
        }
    }

    /// Places one entry: whole blocks of a type ggml defines, aligned, within the file.
    fn place_one(&self, raw: RawTensor) -> Result<(String, TensorInfo)> {
        let RawTensor {
            name,
            dims,
            ty,
            offset,
        } = raw;
        let (alignment, file_len) = (self.alignment, self.file_len);
        let shown = printable(&name);
        let (per, size) = ty.storage().ok_or_else(|| {
            self.bad(format!(
                "tensor `{shown}` has GGML type {}, which ggml does not define",
                match ty {
                    GgmlType::Other(id) => id,
                    _ => 0,
                }
            ))
        })?;
        let row = dims.first().copied().unwrap_or(1);
        if !row.is_multiple_of(per) {
            return Err(self.bad(format!(
                "tensor `{shown}`: rows of {row} {ty:?} values are not whole blocks of {per}"
            )));
        }
        let bytes = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| (n / per).checked_mul(size));
        let start = usize::try_from(offset)
            .ok()
            .and_then(|o| self.data_start.checked_add(o));
        let (Some(bytes), Some(start)) = (bytes, start) else {
            return Err(self.bad(format!(
                "tensor `{shown}` (dimensions {dims:?}, offset {offset}) lies outside the \
                 file of {file_len} bytes"
            )));
        };
        if !offset.is_multiple_of(alignment as u64) {
            return Err(self.bad(format!(
                "tensor `{shown}`: offset {offset} is not a multiple of the alignment \
                 {alignment}"
            )));
        }
        let end = start.checked_add(bytes).filter(|&e| e <= file_len);
        let Some(end) = end else {
            return Err(self.bad(format!(
                "truncated: tensor `{shown}` ends at byte {}, the file has {file_len}",
                start as u128 + bytes as u128
            )));
        };
        let info = TensorInfo {
            ty,
            dims,
            start,
            end,
        };
        Ok((name, info))
    }

    /// Refuses tensors whose bytes overlap (empty ones overlap nothing).
    fn check_overlaps(&self, tensors: &HashMap<String, TensorInfo>) -> Result<()> {
        let mut ranges: Vec<(usize, usize, &str)> = tensors
            .iter()
            .filter(|(_, t)| t.end > t.start)
            .map(|(n, t)| (t.start, t.end, n.as_str()))
            .collect();
        ranges.sort_unstable();
        for pair in ranges.windows(2) {
            let ((a_start, a_end, a), (b_start, _, b)) = (pair[0], pair[1]);
            if b_start < a_end {
                return Err(self.bad(format!(
                    "tensors `{}` and `{}` overlap (bytes {a_start}..{a_end} and {b_start}..)",
                    printable(a),
                    printable(b)
                )));
            }
        }
        Ok(())
    }
}

/// Bytes of one tensor entry at least: name length, dimension count, type and offset.
const MIN_TENSOR_INFO: usize = 8 + 4 + 4 + 8;
/// Bytes of one metadata entry at least: key length, type and a one-byte value.
const MIN_KV: usize = 8 + 4 + 1;

impl Gguf {
    /// Maps and checks the GGUF file `path` (a regular file).
    pub fn open(path: &Path) -> Result<Gguf> {
        let io = |e: std::io::Error| Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let file = crate::files::open_regular(path)?;
        // SAFETY: mapped read-only; the file is not modified while the engine runs.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let len = map.len();
        Self::read(path, Bytes::Mapped(map), len)
    }

    /// Checks a whole GGUF file held in memory.
    pub fn parse(bytes: &[u8]) -> Result<Gguf> {
        Self::read(
            Path::new("<memory>"),
            Bytes::Owned(bytes.to_vec()),
            bytes.len(),
        )
    }

    /// Checks the first bytes of a GGUF file of `file_len` bytes: all of its metadata and
    /// tensor table must be in `prefix`; tensors are checked against `file_len`, and
    /// [`Gguf::tensor`] gives only the data `prefix` holds.
    pub fn parse_header(prefix: &[u8], file_len: u64) -> Result<Gguf> {
        let file_len = usize::try_from(file_len)
            .unwrap_or(usize::MAX)
            .max(prefix.len());
        Self::read(
            Path::new("<memory>"),
            Bytes::Owned(prefix.to_vec()),
            file_len,
        )
    }

    /// Checks the header of `bytes`, a file of `file_len` bytes, and places its tensors.
    fn read(path: &Path, bytes: Bytes, file_len: usize) -> Result<Gguf> {
        let data = bytes.as_slice();
        let mut c = Cursor {
            data: &data[..data.len().min(MAX_HEADER_BYTES)],
            pos: 0,
            path,
            capped: data.len() > MAX_HEADER_BYTES,
        };
        let version = c.version()?;
        let n_tensors = c.count(MIN_TENSOR_INFO, "tensors")?;
        let n_kv = c.count(MIN_KV, "metadata entries")?;
        let metadata = c.metadata(n_kv)?;
        let raw = c.tensor_table(n_tensors)?;
        let alignment = c.alignment(&metadata)?;
        let header_end = c.pos;
        let tensors = Self::place(path, raw, header_end, alignment, file_len)?;
        Ok(Gguf {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            bytes,
            file_len,
        })
    }

    /// Places each tensor in the data section (which starts at the first multiple of
    /// `alignment` after the header) and checks the table as llama.cpp does.
    fn place(
        path: &Path,
        raw: Vec<RawTensor>,
        header_end: usize,
        alignment: usize,
        file_len: usize,
    ) -> Result<HashMap<String, TensorInfo>> {
        let section = DataSection {
            path,
            // header_end <= file_len, and alignment is at most 2^20: no overflow.
            data_start: header_end.next_multiple_of(alignment),
            alignment,
            file_len,
        };
        let mut tensors = HashMap::with_capacity(raw.len());
        for t in raw {
            let (name, info) = section.place_one(t)?;
            // Names are unique: checked as the entries were read.
            tensors.insert(name, info);
        }
        section.check_overlaps(&tensors)?;
        Ok(tensors)
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

    /// The file's length in bytes.
    pub fn file_len(&self) -> usize {
        self.file_len
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
        let bytes = self
            .bytes
            .as_slice()
            .get(info.start..info.end)
            .ok_or_else(|| Error::Tensor {
                name: name.to_string(),
                message: format!(
                    "its data (bytes {}..{}) was not read: only the header of {} is held",
                    info.start,
                    info.end,
                    self.path.display()
                ),
            })?;
        Ok((info, bytes))
    }
}

impl HostMatrix {
    /// A matrix from a GGUF tensor's bytes in GGML `ty` ([rows, cols], rows of whole blocks):
    /// f32, bf16 and f16 as they are, Q8_0 and Q4_0 into their split layouts, every other
    /// block format kept block by block (padded to 4 bytes).
    pub fn from_ggml(ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let (Some(format), Some((per, size))) = (ty.format(), ty.block()) else {
            let id = match ty {
                GgmlType::Other(id) => id,
                _ => u32::MAX,
            };
            return Err(Error::Shape {
                kernel: "weights",
                message: format!("GGML type {id} is not supported"),
            });
        };
        let len = rows.checked_mul(cols).ok_or_else(|| Error::Shape {
            kernel: "weights",
            message: format!("{ty:?} [{rows}, {cols}] is too large"),
        })?;
        HostMatrix::check_shape(format, rows, cols, len)?;
        if !cols.is_multiple_of(per) || bytes.len() != len / per * size {
            return Err(Error::Shape {
                kernel: "weights",
                message: format!("{ty:?} [{rows}, {cols}]: {} bytes", bytes.len()),
            });
        }
        HostMatrix::from_blocks(format, rows, cols, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn mapped_copied_and_header_only_reads_agree() {
        for name in ["gemma1-bf16.gguf", "gemma2-window4096.gguf"] {
            let path = fixture(name);
            let bytes = std::fs::read(&path).unwrap();
            let mapped = Gguf::open(&path).unwrap();
            let copied = Gguf::parse(&bytes).unwrap();
            let data_start = mapped.tensors.values().map(|t| t.start).min().unwrap();
            let header = Gguf::parse_header(&bytes[..data_start], bytes.len() as u64).unwrap();
            for g in [&copied, &header] {
                assert_eq!(g.metadata, mapped.metadata, "{name}");
                assert_eq!(g.tensors.len(), mapped.tensors.len(), "{name}");
                for (n, t) in &mapped.tensors {
                    let u = &g.tensors[n];
                    assert_eq!(
                        (u.ty, &u.dims, u.start, u.end),
                        (t.ty, &t.dims, t.start, t.end)
                    );
                }
            }
            let (_, a) = mapped.tensor("token_embd.weight").unwrap();
            let (_, b) = copied.tensor("token_embd.weight").unwrap();
            assert_eq!(a, b);
            // The header-only copy holds no data: a clean error, not a short slice.
            let e = header.tensor("token_embd.weight").unwrap_err().to_string();
            assert!(e.contains("only the header"), "{e}");
        }
    }

    #[test]
    fn arrays_keep_their_element_width() {
        let g = Gguf::open(&fixture("gemma1-bf16.gguf")).unwrap();
        let types = g
            .get("tokenizer.ggml.token_type")
            .unwrap()
            .as_array()
            .unwrap();
        assert!(matches!(types, Array::I32(v) if v.len() == 520));
        assert_eq!(types.get(0), Some(Value::I64(3)));
        let tokens = g.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
        assert_eq!(tokens.as_strings().map(|t| t[2].as_str()), Some("<bos>"));
        assert_eq!(tokens.values().count(), 520);
        // An enum per element would be 32 bytes: a u8 array is one byte per element.
        assert_eq!(std::mem::size_of::<Array>(), 32);
    }

    /// GGUF v3 without tensors and with one metadata entry: `key`, of type `ty`, `payload`.
    fn one_kv(key: &str, ty: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key.as_bytes());
        b.extend(ty.to_le_bytes());
        b.extend(payload);
        b
    }

    /// `count` arrays each holding the next, the innermost one u8 element.
    fn nested(count: usize) -> Vec<u8> {
        let mut a = vec![];
        for _ in 0..count - 1 {
            a.extend(9u32.to_le_bytes());
            a.extend(1u64.to_le_bytes());
        }
        a.extend(0u32.to_le_bytes());
        a.extend(1u64.to_le_bytes());
        a.push(7);
        a
    }

    #[test]
    fn counts_depths_and_types_are_bounded_by_the_file() {
        let err = |b: &[u8]| match Gguf::parse(b) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        // An array of 2^40 u16: 2 TiB that a 40-byte file cannot hold.
        let mut a = 2u32.to_le_bytes().to_vec();
        a.extend((1u64 << 40).to_le_bytes());
        assert!(err(&one_kv("k", 9, &a)).contains("array elements cannot fit"));
        // The top-level array and MAX_ARRAY_DEPTH - 1 inside it pass; one more does not.
        assert!(Gguf::parse(&one_kv("k", 9, &nested(MAX_ARRAY_DEPTH))).is_ok());
        let e = err(&one_kv("k", 9, &nested(MAX_ARRAY_DEPTH + 1)));
        assert!(e.contains("nested more than 4 deep"), "{e}");
        assert!(err(&one_kv("k", 13, &[0; 8])).contains("unknown metadata type 13"));
        // A string longer than the file.
        assert!(err(&one_kv("k", 8, &u64::MAX.to_le_bytes())).contains("cannot fit"));
        for alignment in [0u32, 3, 7, 1 << 21] {
            let e = err(&one_kv("general.alignment", 4, &alignment.to_le_bytes()));
            assert!(e.contains("is not a power of two from 1 to 1048576"), "{e}");
        }
        for alignment in [1u32, 8, 1 << 20] {
            assert!(Gguf::parse(&one_kv("general.alignment", 4, &alignment.to_le_bytes())).is_ok());
        }
    }
}
