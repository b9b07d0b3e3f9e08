//! A mutation fuzzer for everything read from model files before the GPU sees it: GGUF
//! headers and whole small GGUF files (parse, config, tensor table, host-side conversion,
//! tokenizer), safetensors headers, config.json and model.safetensors.index.json.
//!
//! Each execution mutates a valid seed (bit flips, interesting bytes, GGUF count, length,
//! dimension, type and offset fields overwritten with boundary values, truncation, deleted,
//! inserted, duplicated and spliced chunks, JSON numbers replaced) and asserts that the
//! reader returns `Ok` or a clean `Err`: no panic (caught, reported with the execution's seed
//! and the input saved under the target directory's tmp/fuzz-failures) and no more than
//! `ALLOC_FACTOR` x input size + `ALLOC_SLACK` bytes allocated at once (a counting allocator;
//! a single request past `HARD_CAP` stops the run with its seed before it can abort it).
//!
//! GEMMA_WGPU_FUZZ_ITERS sets the executions of a run (default 100,000, shared equally by
//! the four targets); GEMMA_WGPU_FUZZ_SEED the run's seed; GEMMA_WGPU_FUZZ_REPLAY=
//! <target>:<seed> runs one execution again, its panic not caught.

#[path = "common/gguf_writer.rs"]
mod gguf_writer;

use gemma_wgpu::config::ModelConfig;
use gemma_wgpu::engine::Tokenizer;
use gemma_wgpu::weights::gemma;
use gemma_wgpu::weights::gguf::Gguf;
use gemma_wgpu::weights::safetensors;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Peak live bytes an execution may add: this many times its input's size...
const ALLOC_FACTOR: usize = 64;
/// ... plus this (the tokenizer library's fixed tables, a JSON parser's buffers).
const ALLOC_SLACK: usize = 4 << 20;
/// One request this large ends the run at once (it could abort the process).
const HARD_CAP: usize = 1 << 30;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static SEED: Cell<u64> = const { Cell::new(0) };
}

/// Counts the live bytes of the fuzzing thread while armed.
struct Counting;

fn write_stderr(parts: &[&[u8]]) {
    for p in parts {
        // SAFETY: writing a valid buffer to fd 2; no allocation.
        unsafe { libc::write(2, p.as_ptr().cast(), p.len()) };
    }
}

/// `v` in decimal, without allocating.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

fn grow(size: usize) {
    if !ARMED.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    if size >= HARD_CAP {
        let (mut a, mut b) = ([0; 20], [0; 20]);
        let seed = SEED.try_with(Cell::get).unwrap_or(0);
        write_stderr(&[
            b"fuzz: execution with seed ",
            decimal(seed, &mut a),
            b" asked for ",
            decimal(size as u64, &mut b),
            b" bytes at once\n",
        ]);
        std::process::abort();
    }
    let _ = LIVE.try_with(|l| {
        let live = l.get() + size;
        l.set(live);
        let _ = PEAK.try_with(|p| p.set(p.get().max(live)));
    });
}

fn shrink(size: usize) {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(size)));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grow(new_size - layout.size());
        } else {
            shrink(layout.size() - new_size);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// splitmix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Where a seed's fixed-width fields are, so mutations can aim at them.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Field {
    /// A count, length, dimension or offset.
    U64,
    /// A type id or dimension count.
    U32,
}

/// One seed input.
struct Seed {
    name: String,
    bytes: Vec<u8>,
    fields: Vec<(usize, Field)>,
    /// For header-only seeds: the length of the file they begin.
    file_len: u64,
}

/// The fixed-width fields of a GGUF header, found by walking it.
fn gguf_fields(b: &[u8]) -> Vec<(usize, Field)> {
    let mut f = vec![(8, Field::U64), (16, Field::U64)];
    let u32_at = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
    let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
    let n_tensors = u64_at(8);
    let n_kv = u64_at(16);
    let mut p = 24;
    fn value(b: &[u8], p: &mut usize, ty: u32, f: &mut Vec<(usize, Field)>) {
        let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
        match ty {
            0 | 1 | 7 => *p += 1,
            2 | 3 => *p += 2,
            4..=6 => *p += 4,
            10..=12 => *p += 8,
            8 => {
                f.push((*p, Field::U64));
                *p += 8 + u64_at(*p);
            }
            9 => {
                let inner = u32::from_le_bytes(b[*p..*p + 4].try_into().unwrap());
                f.push((*p, Field::U32));
                f.push((*p + 4, Field::U64));
                let n = u64_at(*p + 4);
                *p += 12;
                for _ in 0..n {
                    // Only the first strings' lengths: a long token list would crowd out
                    // the header's own fields.
                    let before = f.len();
                    value(b, p, inner, f);
                    if before > 64 {
                        f.truncate(before);
                    }
                }
            }
            _ => panic!("seed has metadata type {ty}"),
        }
    }
    for _ in 0..n_kv {
        f.push((p, Field::U64));
        p += 8 + u64_at(p);
        let ty = u32_at(p);
        f.push((p, Field::U32));
        p += 4;
        value(b, &mut p, ty, &mut f);
    }
    for _ in 0..n_tensors {
        f.push((p, Field::U64));
        p += 8 + u64_at(p);
        let n_dims = u32_at(p) as usize;
        f.push((p, Field::U32));
        p += 4;
        for _ in 0..n_dims {
            f.push((p, Field::U64));
            p += 8;
        }
        f.push((p, Field::U32));
        f.push((p + 4, Field::U64));
        p += 12;
    }
    f
}

/// Where a GGUF header ends (the data section's start, at alignment 32).
fn gguf_header_len(b: &[u8]) -> usize {
    gguf_fields(b)
        .last()
        .map(|&(p, _)| p + 8)
        .unwrap_or(24)
        .next_multiple_of(32)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

const U64S: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    31,
    32,
    33,
    64,
    255,
    256,
    4096,
    65_535,
    1 << 20,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    1 << 40,
    (1 << 62) + 1,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 4096,
    u64::MAX - 31,
    u64::MAX - 1,
    u64::MAX,
];
const U32S: &[u32] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    30,
    31,
    39,
    40,
    255,
    0xffff,
    i32::MAX as u32,
    1 << 31,
    u32::MAX,
];
const JSON_VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "3",
    "7",
    "1e400",
    "-1e400",
    "1e-400",
    "0.0",
    "-0.0",
    "NaN",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "1099511627776",
    "null",
    "true",
    "\"\"",
    "\"\\u001b[2J\"",
    "\"../../etc/passwd\"",
    "\"/etc/passwd\"",
    "\"a#b\"",
    "[]",
    "{}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]",
];

/// The same number (read at `len` bytes), nudged or replaced.
fn interesting_u64(r: &mut Rng, old: u64, file_len: u64) -> u64 {
    match r.below(6) {
        0 => old.wrapping_add(r.below(65) as u64).wrapping_sub(32),
        1 => file_len.wrapping_add(r.below(9) as u64).wrapping_sub(4),
        2 => old.wrapping_mul(2 + r.below(1000) as u64),
        3 => r.next(),
        _ => *r.pick(U64S),
    }
}

fn mutate(r: &mut Rng, seed: &Seed, seeds: &[Seed], target: Target) -> Vec<u8> {
    if target == Target::SafetensorsHeader && r.below(4) != 0 {
        // Mutate the JSON, then (mostly) give the header length its new value, so that
        // the mutation reaches the header's content.
        let json = Seed {
            name: seed.name.clone(),
            bytes: seed.bytes[8..].to_vec(),
            fields: vec![],
            file_len: 0,
        };
        let mut header = mutate(r, &json, &[], Target::Json);
        let n = if r.below(8) == 0 {
            interesting_u64(r, header.len() as u64, seed.file_len)
        } else {
            header.len() as u64
        };
        let mut b = n.to_le_bytes().to_vec();
        b.append(&mut header);
        return b;
    }
    let mut b = seed.bytes.clone();
    let file_len = seed.file_len;
    let json = target == Target::Json;
    for _ in 0..1 + r.below(if json { 2 } else { 4 }) {
        let len = b.len();
        // JSON: mostly values replaced, so that most inputs stay JSON.
        let choice = if json && r.below(3) != 0 {
            10
        } else {
            r.below(if json { 11 } else { 10 })
        };
        match choice {
            0 if len > 0 => {
                let i = r.below(len);
                b[i] ^= 1 << r.below(8);
            }
            1 if len > 0 => {
                let i = r.below(len);
                b[i] = *r.pick(&[0, 0xff, 0x7f, 0x80, 1, b' ', b'"', b'\\', 0x1b]);
            }
            2 | 3 if !seed.fields.is_empty() => {
                // A field of the seed, where it still is (earlier mutations may have moved
                // it: then it hits whatever is there now, which is fine too).
                let (at, kind) = *r.pick(&seed.fields);
                match kind {
                    Field::U64 if at + 8 <= len => {
                        let old = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
                        b[at..at + 8]
                            .copy_from_slice(&interesting_u64(r, old, file_len).to_le_bytes());
                    }
                    Field::U32 if at + 4 <= len => {
                        b[at..at + 4].copy_from_slice(&r.pick(U32S).to_le_bytes());
                    }
                    _ => {}
                }
            }
            4 if len >= 8 => {
                let at = r.below(len - 7);
                let old = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
                b[at..at + 8].copy_from_slice(&interesting_u64(r, old, file_len).to_le_bytes());
            }
            5 => b.truncate(r.below(len + 1)),
            6 if len > 0 => {
                let at = r.below(len);
                let n = (1 + r.below(256)).min(len - at);
                b.drain(at..at + n);
            }
            7 => {
                let at = r.below(len + 1);
                let n = 1 + r.below(64);
                let fill: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
                b.splice(at..at, fill);
            }
            8 if len > 0 => {
                // Duplicate a chunk (a metadata entry, a tensor entry, a JSON member).
                let from = r.below(len);
                let n = (1 + r.below(512)).min(len - from);
                let chunk = b[from..from + n].to_vec();
                let at = r.below(len + 1);
                b.splice(at..at, chunk);
            }
            9 => {
                // Splice in a chunk of another seed of the same kind.
                let other: &[u8] = if seeds.is_empty() {
                    &seed.bytes
                } else {
                    &r.pick(seeds).bytes
                };
                if !other.is_empty() && len > 0 {
                    let from = r.below(other.len());
                    let n = (1 + r.below(512)).min(other.len() - from);
                    let at = r.below(len);
                    let end = (at + r.below(512)).min(len);
                    b.splice(at..end, other[from..from + n].iter().copied());
                }
            }
            10 => {
                // Replace a JSON value (a number, string or literal after `:`, `,` or `[`)
                // with a boundary value.
                let starts: Vec<usize> = (1..len)
                    .filter(|&i| {
                        let prev = b[..i].iter().rev().find(|c| !c.is_ascii_whitespace());
                        matches!(prev, Some(b':' | b',' | b'['))
                            && (b[i].is_ascii_digit() || b"\"-tfn".contains(&b[i]))
                    })
                    .collect();
                if !starts.is_empty() {
                    let at = *r.pick(&starts);
                    let end = if b[at] == b'"' {
                        (at + 1..len).find(|&i| b[i] == b'"').map_or(len, |i| i + 1)
                    } else {
                        (at..len)
                            .find(|&i| !(b[i].is_ascii_alphanumeric() || b"+-.".contains(&b[i])))
                            .unwrap_or(len)
                    };
                    b.splice(at..end, r.pick(JSON_VALUES).bytes());
                }
            }
            _ => {}
        }
        // Inputs stay near their seed's size.
        b.truncate(2 * seed.bytes.len() + 4096);
    }
    b
}

/// Loads a GGUF as far as the host goes: config, tensor table, every tensor converted (and
/// expanded to i8_affine where it is a block format), and every `tokenizer_every`-th time
/// the tokenizer.
/// Returns how far it got: 1 parsed, 2 configured, 3 table checked, 4 every tensor read.
fn load_gguf(g: &Gguf, tokenizer: bool) -> usize {
    if tokenizer {
        let _ = Tokenizer::from_gguf(g);
    }
    let Ok(c) = ModelConfig::from_gguf(g) else {
        return 1;
    };
    if gemma::check_gguf(g, &c).is_err() {
        return 2;
    }
    let read = gemma::each_tensor(&c, |name, shape| {
        if shape[1] == 1 {
            gemma::gguf_norm(g, &name.gguf, shape[0]).map(drop)
        } else {
            let m = gemma::gguf_matrix(g, &name.gguf, shape)?;
            let expanded = m.to_i8_affine();
            let _ = m.dequantize();
            drop(expanded);
            Ok(())
        }
    });
    if read.is_ok() { 4 } else { 3 }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// Fixture headers (the data past the first 4 KiB left out): parse, config, table.
    GgufHeader,
    /// Whole tiny models: everything the host does with a GGUF.
    GgufFile,
    /// Safetensors headers of every fixture.
    SafetensorsHeader,
    /// config.json and model.safetensors.index.json texts.
    Json,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::GgufHeader => "gguf-header",
            Target::GgufFile => "gguf-file",
            Target::SafetensorsHeader => "safetensors-header",
            Target::Json => "json",
        }
    }

    fn seeds(self) -> Vec<Seed> {
        match self {
            Target::GgufHeader => ["gemma1-bf16.gguf", "gemma2-window4096.gguf"]
                .iter()
                .map(|f| {
                    let all = std::fs::read(fixture(f)).unwrap();
                    let header = gguf_header_len(&all);
                    let bytes = all[..(header + 4096).min(all.len())].to_vec();
                    Seed {
                        name: f.to_string(),
                        fields: gguf_fields(&bytes),
                        file_len: all.len() as u64,
                        bytes,
                    }
                })
                .collect(),
            Target::GgufFile => ["gemma2", "gemma3"]
                .iter()
                .map(|arch| {
                    let bytes = gguf_writer::tiny_gemma(arch).bytes();
                    Seed {
                        name: format!("tiny {arch}"),
                        fields: gguf_fields(&bytes),
                        file_len: bytes.len() as u64,
                        bytes,
                    }
                })
                .collect(),
            Target::SafetensorsHeader => {
                let mut seeds = vec![];
                for dir in ["gemma1-bf16", "gemma2-bf16", "gemma2-f32", "gemma3-bf16"] {
                    for e in std::fs::read_dir(fixture(dir)).unwrap() {
                        let p = e.unwrap().path();
                        let name = p.file_name().unwrap().to_string_lossy().to_string();
                        if !name.starts_with("model") || !name.ends_with(".safetensors") {
                            continue;
                        }
                        let all = std::fs::read(&p).unwrap();
                        let n = u64::from_le_bytes(all[..8].try_into().unwrap()) as usize;
                        seeds.push(Seed {
                            name: format!("{dir}/{name}"),
                            bytes: all[..8 + n].to_vec(),
                            fields: vec![(0, Field::U64)],
                            file_len: all.len() as u64,
                        });
                    }
                }
                seeds
            }
            Target::Json => {
                let mut seeds = vec![];
                for dir in [
                    "gemma1-bf16",
                    "gemma2-bf16",
                    "gemma2-f32",
                    "gemma2-window4096",
                    "gemma3-bf16",
                ] {
                    for name in ["config.json", "model.safetensors.index.json"] {
                        if let Ok(text) = std::fs::read(fixture(dir).join(name)) {
                            seeds.push(Seed {
                                name: format!("{dir}/{name}"),
                                bytes: text,
                                fields: vec![],
                                file_len: 0,
                            });
                        }
                    }
                }
                seeds
            }
        }
    }

    /// One execution on `input` (from `seed`). `variant` picks among the ways to read it.
    /// Returns how far the input got (0: refused at once; see [`load_gguf`]).
    fn exec(self, input: &[u8], seed: &Seed, variant: u64) -> usize {
        match self {
            Target::GgufHeader => {
                // Either the first bytes of the fixture's file, or a whole (short) file.
                let file_len = if variant.is_multiple_of(2) {
                    (seed.file_len + input.len() as u64).saturating_sub(seed.bytes.len() as u64)
                } else {
                    input.len() as u64
                };
                match Gguf::parse_header(input, file_len) {
                    Ok(g) => load_gguf(&g, variant % 64 == 1),
                    Err(_) => 0,
                }
            }
            Target::GgufFile => match Gguf::parse(input) {
                Ok(g) => load_gguf(&g, true),
                Err(_) => 0,
            },
            Target::SafetensorsHeader => {
                let file_len = if variant.is_multiple_of(2) {
                    (seed.file_len + input.len() as u64).saturating_sub(seed.bytes.len() as u64)
                } else {
                    input.len() as u64
                };
                safetensors::parse_header(Path::new("fuzz"), input, file_len).is_ok() as usize
            }
            Target::Json => {
                let text = String::from_utf8_lossy(input);
                if seed.name.ends_with("index.json") {
                    safetensors::shard_names(&text, Path::new("fuzz")).is_ok() as usize
                } else {
                    ModelConfig::from_json(&text, "fuzz").is_ok() as usize
                }
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Panics caught in executions, with their seeds.
struct Report {
    target: Target,
    executions: u64,
    ok_seeds: usize,
    failures: Vec<String>,
    worst_ratio: f64,
    /// Executions by how far their input got.
    depths: [u64; 5],
}

fn exec_seed(base: u64, target: Target, i: u64) -> u64 {
    let mut r = Rng(base ^ ((target as u64) << 56) ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d));
    r.next()
}

/// Runs one execution of `target` with execution seed `s`; returns the input, the peak
/// bytes allocated over the baseline, and how far it got or the message it panicked with.
fn run_one(target: Target, seeds: &[Seed], s: u64) -> (Vec<u8>, usize, Result<usize, String>) {
    let mut r = Rng(s);
    let seed = r.pick(seeds);
    let input = mutate(&mut r, seed, seeds, target);
    let variant = r.next();
    SEED.with(|c| c.set(s));
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    ARMED.with(|a| a.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        target.exec(&input, seed, variant)
    }));
    ARMED.with(|a| a.set(false));
    let peak = PEAK.with(Cell::get).saturating_sub(base);
    let result = result.map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    });
    (input, peak, result)
}

fn save_failure(target: Target, s: u64, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{}-{s:#018x}.bin", target.name()));
    let _ = std::fs::write(&path, input);
    path
}

fn fuzz(target: Target) -> Report {
    let iters = env_u64("GEMMA_WGPU_FUZZ_ITERS").unwrap_or(100_000) / 4;
    let base = env_u64("GEMMA_WGPU_FUZZ_SEED").unwrap_or(0x6765_6d6d_6120_7767);
    let seeds = target.seeds();
    assert!(!seeds.is_empty(), "{target:?}: no seeds");
    // The seeds themselves must load: a fuzzer whose seeds fail explores nothing.
    let ok_seeds = seeds
        .iter()
        .filter(|s| match target {
            Target::GgufHeader => Gguf::parse_header(&s.bytes, s.file_len)
                .and_then(|g| {
                    let c = ModelConfig::from_gguf(&g)?;
                    gemma::check_gguf(&g, &c)
                })
                .is_ok(),
            Target::GgufFile => Gguf::parse(&s.bytes)
                .and_then(|g| {
                    let c = ModelConfig::from_gguf(&g)?;
                    gemma::check_gguf(&g, &c)?;
                    Tokenizer::from_gguf(&g).map(drop)
                })
                .is_ok(),
            Target::SafetensorsHeader => {
                safetensors::parse_header(Path::new("seed"), &s.bytes, s.file_len).is_ok()
            }
            Target::Json => true,
        })
        .count();
    assert_eq!(ok_seeds, seeds.len(), "{target:?}: a seed does not load");
    let mut failures = vec![];
    let mut worst_ratio = 0.0f64;
    let mut depths = [0; 5];
    for i in 0..iters {
        let s = exec_seed(base, target, i);
        let (input, peak, result) = run_one(target, &seeds, s);
        let bound = ALLOC_FACTOR * input.len() + ALLOC_SLACK;
        worst_ratio = worst_ratio.max(peak as f64 / bound as f64);
        if let Ok(depth) = result {
            depths[depth.min(4)] += 1;
        }
        if let Err(message) = result {
            let path = save_failure(target, s, &input);
            failures.push(format!(
                "{}:{s:#x} panicked: {message} (input: {})",
                target.name(),
                path.display()
            ));
        } else if peak > bound {
            let path = save_failure(target, s, &input);
            failures.push(format!(
                "{}:{s:#x} allocated {peak} bytes for {} input bytes (bound {bound}; input: {})",
                target.name(),
                input.len(),
                path.display()
            ));
        }
        if failures.len() >= 20 {
            break;
        }
    }
    Report {
        target,
        executions: iters,
        ok_seeds,
        failures,
        worst_ratio,
        depths,
    }
}

/// Panics inside executions are caught and reported with their seeds; the default hook
/// would print each one too. Panics outside them (the test's own asserts) still print.
fn quiet_while_armed() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !ARMED.try_with(Cell::get).unwrap_or(false) {
                default(info);
            }
        }));
    });
}

fn check(target: Target) {
    if let Ok(replay) = std::env::var("GEMMA_WGPU_FUZZ_REPLAY") {
        // One execution again, its panic not caught: `target:seed`.
        let (name, s) = replay.split_once(':').expect("target:seed");
        if name != target.name() {
            return;
        }
        let s = u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex seed");
        let seeds = target.seeds();
        let mut r = Rng(s);
        let seed = r.pick(&seeds);
        let input = mutate(&mut r, seed, &seeds, target);
        let depth = target.exec(&input, seed, r.next());
        println!("{replay}: {} input bytes, depth {depth}", input.len());
        return;
    }
    quiet_while_armed();
    let start = Instant::now();
    let report = fuzz(target);
    println!(
        "{}: {} executions of {} seeds in {:.1} s, {} failures, peak allocation at most {:.1}% \
         of the bound; inputs by depth reached {:?}",
        report.target.name(),
        report.executions,
        report.ok_seeds,
        start.elapsed().as_secs_f64(),
        report.failures.len(),
        100.0 * report.worst_ratio,
        report.depths,
    );
    assert!(
        report.failures.is_empty(),
        "{} failures:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
}

#[test]
fn gguf_headers_never_panic_or_balloon() {
    check(Target::GgufHeader);
}

#[test]
fn whole_gguf_files_never_panic_or_balloon() {
    check(Target::GgufFile);
}

#[test]
fn safetensors_headers_never_panic_or_balloon() {
    check(Target::SafetensorsHeader);
}

#[test]
fn config_and_index_json_never_panic_or_balloon() {
    check(Target::Json);
}
