//! A GGUF writer for tests: a tiny but complete Gemma model (every tensor, metadata key and
//! tokenizer array a real file has, at a few KiB), and the means to break it field by field.

#![allow(dead_code)]

pub const F32: u32 = 0;
pub const F16: u32 = 1;
pub const Q4_0: u32 = 2;
pub const Q4_1: u32 = 3;
pub const Q5_0: u32 = 6;
pub const Q5_1: u32 = 7;
pub const Q8_0: u32 = 8;
pub const Q4_K: u32 = 12;
pub const Q6_K: u32 = 14;
pub const BF16: u32 = 30;

/// A metadata value.
#[derive(Clone, Debug)]
pub enum Kv {
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
    F32s(Vec<f32>),
    /// Any type id and its encoded payload, written as given.
    Raw(u32, Vec<u8>),
}

impl Kv {
    fn write(&self, out: &mut Vec<u8>) {
        let string = |out: &mut Vec<u8>, s: &str| {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        };
        match self {
            Kv::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Kv::I32(v) => {
                out.extend(5u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Kv::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Kv::Bool(v) => {
                out.extend(7u32.to_le_bytes());
                out.push(*v as u8);
            }
            Kv::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(out, s);
            }
            Kv::U64(v) => {
                out.extend(10u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Kv::Strs(v) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((v.len() as u64).to_le_bytes());
                for s in v {
                    string(out, s);
                }
            }
            Kv::I32s(v) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((v.len() as u64).to_le_bytes());
                v.iter().for_each(|x| out.extend(x.to_le_bytes()));
            }
            Kv::F32s(v) => {
                out.extend(9u32.to_le_bytes());
                out.extend(6u32.to_le_bytes());
                out.extend((v.len() as u64).to_le_bytes());
                v.iter().for_each(|x| out.extend(x.to_le_bytes()));
            }
            Kv::Raw(ty, bytes) => {
                out.extend(ty.to_le_bytes());
                out.extend(bytes);
            }
        }
    }
}

/// One tensor: its entry and its data.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    /// GGML order: innermost (columns) first.
    pub dims: Vec<u64>,
    pub ty: u32,
    pub data: Vec<u8>,
    /// Written instead of the tensor's real offset.
    pub offset: Option<u64>,
}

/// A GGUF file to write.
#[derive(Clone, Debug)]
pub struct GgufFile {
    pub version: u32,
    pub kv: Vec<(String, Kv)>,
    pub tensors: Vec<Tensor>,
    /// Alignment the data is laid out with (whatever `general.alignment` says).
    pub alignment: u64,
    /// Written instead of the real counts.
    pub n_tensors: Option<u64>,
    pub n_kv: Option<u64>,
}

/// (elements per block, bytes per block).
fn block(ty: u32) -> (u64, u64) {
    match ty {
        F32 => (1, 4),
        F16 | BF16 => (1, 2),
        Q4_0 => (32, 18),
        Q4_1 => (32, 20),
        Q5_0 => (32, 22),
        Q5_1 => (32, 24),
        Q8_0 => (32, 34),
        Q4_K => (256, 144),
        Q6_K => (256, 210),
        _ => panic!("no size for type {ty}"),
    }
}

/// Deterministic bytes that are small finite numbers in f32, f16 and bf16, and arbitrary but
/// harmless codes with small f16 scales in the block formats.
fn data(ty: u32, elements: u64, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut small = || ((next() % 2001) as f32 - 1000.0) / 10_000.0;
    match ty {
        F32 => (0..elements).flat_map(|_| small().to_le_bytes()).collect(),
        F16 => (0..elements)
            .flat_map(|_| half::f16::from_f32(small()).to_le_bytes())
            .collect(),
        BF16 => (0..elements)
            .flat_map(|_| half::bf16::from_f32(small()).to_le_bytes())
            .collect(),
        _ => {
            let (per, size) = block(ty);
            let mut out = Vec::new();
            for _ in 0..elements / per {
                let mut b: Vec<u8> = (0..size).map(|_| next() as u8).collect();
                // Every format's first half is an f16 scale (the K formats' d): keep it small.
                let d = half::f16::from_f32(0.01).to_le_bytes();
                let at = if ty == Q6_K { size as usize - 2 } else { 0 };
                b[at..at + 2].copy_from_slice(&d);
                out.extend(b);
            }
            out
        }
    }
}

impl GgufFile {
    pub fn tensor(name: &str, dims: &[u64], ty: u32, seed: u64) -> Tensor {
        let elements: u64 = dims.iter().product();
        Tensor {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            data: data(ty, elements, seed),
            offset: None,
        }
    }

    /// Sets metadata `key` (replacing it where present).
    pub fn set(&mut self, key: &str, v: Kv) -> &mut Self {
        match self.kv.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = v,
            None => self.kv.push((key.into(), v)),
        }
        self
    }

    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.kv.retain(|(k, _)| k != key);
        self
    }

    pub fn tensor_mut(&mut self, name: &str) -> &mut Tensor {
        self.tensors
            .iter_mut()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    /// Where each tensor's data goes in the data section: in order, each at the next
    /// multiple of `alignment`.
    pub fn offsets(&self) -> Vec<u64> {
        let mut offsets = Vec::new();
        let mut at = 0u64;
        for t in &self.tensors {
            offsets.push(at);
            at = (at + t.data.len() as u64).next_multiple_of(self.alignment.max(1));
        }
        offsets
    }

    /// The real offset of tensor `name`.
    pub fn offset_of(&self, name: &str) -> u64 {
        let i = self.tensors.iter().position(|t| t.name == name).unwrap();
        self.offsets()[i]
    }

    /// Where the data section starts.
    pub fn data_start(&self) -> u64 {
        self.header().len() as u64
    }

    /// Header, metadata and tensor entries, padded to `alignment`.
    fn header(&self) -> Vec<u8> {
        let align = self.alignment.max(1);
        let offsets = self.offsets();
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend(
            self.n_tensors
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        out.extend(self.n_kv.unwrap_or(self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            out.extend((k.len() as u64).to_le_bytes());
            out.extend(k.as_bytes());
            v.write(&mut out);
        }
        for (t, &natural) in self.tensors.iter().zip(&offsets) {
            out.extend((t.name.len() as u64).to_le_bytes());
            out.extend(t.name.as_bytes());
            out.extend((t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(t.ty.to_le_bytes());
            out.extend(t.offset.unwrap_or(natural).to_le_bytes());
        }
        let data_start = (out.len() as u64).next_multiple_of(align);
        out.resize(data_start as usize, 0);
        out
    }

    /// The file's bytes: header, metadata, tensor entries, then the data.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.header();
        let data_start = out.len() as u64;
        for (t, &natural) in self.tensors.iter().zip(&self.offsets()) {
            out.resize((data_start + natural) as usize, 0);
            out.extend(&t.data);
        }
        out
    }
}

/// The tokens of the tiny models: 6 control tokens, `▁` and the letters a to y.
pub fn tiny_tokens() -> Vec<String> {
    let mut t: Vec<String> = [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
        "\u{2581}",
    ]
    .map(String::from)
    .to_vec();
    t.extend((b'a'..=b'y').map(|c| (c as char).to_string()));
    t
}

/// A complete Gemma 2 (`arch` "gemma2") or Gemma 3 ("gemma3") model of 2 layers: hidden 32,
/// 2 heads of 16 over 1 kv head, intermediate 256, vocabulary 32; the matrices in a
/// different GGML type each (f32, f16, bf16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K).
pub fn tiny_gemma(arch: &str) -> GgufFile {
    let (hidden, inter, heads, kv_heads, head_dim, vocab) =
        (32u64, 256u64, 2u64, 1u64, 16u64, 32u64);
    let tokens = tiny_tokens();
    assert_eq!(tokens.len() as u64, vocab);
    let mut f = GgufFile {
        version: 3,
        kv: vec![],
        tensors: vec![],
        alignment: 32,
        n_tensors: None,
        n_kv: None,
    };
    let k = |s: &str| format!("{arch}.{s}");
    f.set("general.architecture", Kv::Str(arch.into()))
        .set("general.alignment", Kv::U32(32))
        .set(&k("context_length"), Kv::U32(128))
        .set(&k("embedding_length"), Kv::U32(hidden as u32))
        .set(&k("block_count"), Kv::U32(2))
        .set(&k("feed_forward_length"), Kv::U32(inter as u32))
        .set(&k("attention.head_count"), Kv::U32(heads as u32))
        .set(&k("attention.head_count_kv"), Kv::U32(kv_heads as u32))
        .set(&k("attention.key_length"), Kv::U32(head_dim as u32))
        .set(&k("attention.value_length"), Kv::U32(head_dim as u32))
        .set(&k("attention.layer_norm_rms_epsilon"), Kv::F32(1e-6))
        .set(&k("rope.freq_base"), Kv::F32(10_000.0))
        .set(&k("attention.sliding_window"), Kv::U32(16));
    if arch == "gemma2" {
        f.set(&k("attn_logit_softcapping"), Kv::F32(50.0))
            .set(&k("final_logit_softcapping"), Kv::F32(30.0));
    }
    f.set("tokenizer.ggml.model", Kv::Str("llama".into()))
        .set("tokenizer.ggml.tokens", Kv::Strs(tokens.clone()))
        .set(
            "tokenizer.ggml.scores",
            Kv::F32s((0..vocab).map(|i| -(i as f32)).collect()),
        )
        .set(
            "tokenizer.ggml.token_type",
            Kv::I32s((0..vocab).map(|i| if i < 6 { 3 } else { 1 }).collect()),
        )
        .set("tokenizer.ggml.bos_token_id", Kv::U32(2))
        .set("tokenizer.ggml.eos_token_id", Kv::U32(1))
        .set("tokenizer.ggml.add_bos_token", Kv::Bool(true));
    let (q, kv) = (heads * head_dim, kv_heads * head_dim);
    let mut seed = 0;
    let mut t = |name: String, dims: &[u64], ty: u32| {
        seed += 1;
        GgufFile::tensor(&name, dims, ty, seed)
    };
    let mut tensors = vec![
        t("token_embd.weight".into(), &[hidden, vocab], F16),
        t("output_norm.weight".into(), &[hidden], F32),
    ];
    for i in 0..2u32 {
        let b = |s: &str| format!("blk.{i}.{s}.weight");
        let pick = |a: u32, b: u32| if i == 0 { a } else { b };
        tensors.extend([
            t(b("attn_norm"), &[hidden], F32),
            t(b("attn_q"), &[hidden, q], pick(Q8_0, BF16)),
            t(b("attn_k"), &[hidden, kv], pick(Q4_0, F32)),
            t(b("attn_v"), &[hidden, kv], pick(Q4_1, F16)),
            t(b("attn_output"), &[q, hidden], pick(Q5_0, Q5_1)),
            t(b("post_attention_norm"), &[hidden], F32),
            t(b("ffn_norm"), &[hidden], F32),
            t(b("ffn_gate"), &[hidden, inter], pick(Q8_0, Q4_0)),
            t(b("ffn_up"), &[hidden, inter], pick(Q4_1, Q8_0)),
            t(b("ffn_down"), &[inter, hidden], pick(Q6_K, Q4_K)),
            t(b("post_ffw_norm"), &[hidden], F32),
        ]);
        if arch == "gemma3" {
            tensors.extend([
                t(b("attn_q_norm"), &[head_dim], F32),
                t(b("attn_k_norm"), &[head_dim], F32),
            ]);
        }
    }
    f.tensors = tensors;
    f
}
