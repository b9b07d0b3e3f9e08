//! The command line as a user runs it.

use std::process::Command;

fn gemma(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gemma-wgpu"))
        .args(args)
        .output()
        .expect("run gemma-wgpu")
}

#[test]
fn devices_lists_every_adapter_with_features_and_limits() {
    let out = gemma(&["devices"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "[0]",
        "backend: Vulkan",
        "backend: Gl",
        "type: Cpu",
        "driver:",
        "shader-f16: yes",
        "subgroups: yes",
        "timestamps:",
        "max storage binding: 128 MiB",
        "max buffer:",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}

#[test]
fn devices_filters_by_backend() {
    let out = gemma(&["--backend", "gl", "devices"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("backend: Gl") && !text.contains("backend: Vulkan"),
        "{text}"
    );
}

#[test]
fn unknown_backend_is_a_clear_error() {
    let out = gemma(&["--backend", "glide", "devices"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unknown backend `glide`"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn devices_with_an_adapter_prints_only_that_one() {
    let out = gemma(&["--backend", "vulkan", "--adapter", "0", "devices"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(text.matches("backend:").count(), 1, "{text}");
    let out = gemma(&["--adapter", "no such adapter", "devices"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no adapter matches `no such adapter`; available: 0: "),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// Each command fails with `expected` in its stderr and no panic.
fn expect_clear_errors(cases: &[(Vec<&str>, &str)]) {
    for (args, expected) in cases {
        let out = gemma(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(expected),
            "{args:?}: expected `{expected}` in:\n{err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Copies the files of fixture `model` into `dst`.
fn copy_fixture(model: &str, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(fixture(model)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Prompt 0 of a fixture: its ids and transformers' greedy continuation.
fn golden(model: &str) -> (Vec<i32>, Vec<i32>) {
    let bytes = std::fs::read(format!("{}/golden.safetensors", fixture(model))).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = |n: &str| bytemuck::pod_collect_to_vec::<u8, i32>(st.tensor(n).unwrap().data());
    (ints("ids_0"), ints("generated_0"))
}

fn join(ids: &[i32]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn generate_json_gives_transformers_greedy_tokens() {
    let (ids, generated) = golden("gemma2-bf16");
    let out = gemma(&[
        "--backend",
        "vulkan",
        "generate",
        "--model",
        &fixture("gemma2-bf16"),
        "--tokens",
        &join(&ids),
        "--max-tokens",
        "24",
        "--kv",
        "f32",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let got: Vec<i32> = v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect();
    assert_eq!(got, generated);
    assert!(v["text"].is_string());
    // Statistics go to stderr, so stdout pipes cleanly.
    assert!(
        stderr.contains("tok/s") && stderr.contains("llvmpipe"),
        "{stderr}"
    );
}

#[test]
fn generate_streams_text_from_a_prompt_and_a_chat() {
    let model = fixture("gemma2-bf16");
    for extra in [
        &[][..],
        &["--chat"][..],
        &["--temperature", "0.7", "--top-p", "0.9", "--seed", "1"][..],
    ] {
        let mut args = vec![
            "generate",
            "--model",
            &model,
            "--prompt",
            "Once upon a time",
            "--max-tokens",
            "8",
        ];
        args.extend_from_slice(extra);
        let out = gemma(&args);
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn logits_writes_every_position_and_never_overwrites() {
    let (ids, _) = golden("gemma2-f32");
    let dir = std::env::temp_dir().join(format!("gemma-wgpu-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("logits.safetensors");
    let _ = std::fs::remove_file(&path);
    let args = [
        "--backend",
        "vulkan",
        "logits",
        "--model",
        &fixture("gemma2-f32"),
        "--tokens",
        &join(&ids),
        "--kv",
        "f32",
        "--out",
        path.to_str().unwrap(),
    ];
    let out = gemma(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("logits").unwrap();
    assert_eq!(t.shape(), &[ids.len(), 520]);
    let golden_bytes =
        std::fs::read(format!("{}/golden.safetensors", fixture("gemma2-f32"))).unwrap();
    let g = safetensors::SafeTensors::deserialize(&golden_bytes).unwrap();
    let expected: Vec<f32> = bytemuck::pod_collect_to_vec(g.tensor("logits_0").unwrap().data());
    let got: Vec<f32> = bytemuck::pod_collect_to_vec(t.data());
    let d = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(d <= 1e-3, "max |logit - transformers| = {d}");
    // A second run must not replace the file.
    let again = gemma(&args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwritten"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn bad_input_gets_one_clear_line_and_no_panic() {
    let dir = std::env::temp_dir().join(format!("gemma-wgpu-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Another architecture.
    let arch = dir.join("llama");
    std::fs::create_dir_all(&arch).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(format!("{}/{f}", fixture("gemma2-bf16")), arch.join(f)).unwrap();
    }
    let config =
        std::fs::read_to_string(format!("{}/config.json", fixture("gemma2-bf16"))).unwrap();
    std::fs::write(
        arch.join("config.json"),
        config.replace("\"gemma2\"", "\"llama\""),
    )
    .unwrap();
    // A truncated checkpoint.
    let cut = dir.join("truncated");
    std::fs::create_dir_all(&cut).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "config.json"] {
        std::fs::copy(format!("{}/{f}", fixture("gemma2-f32")), cut.join(f)).unwrap();
    }
    let weights = std::fs::read(format!("{}/model.safetensors", fixture("gemma2-f32"))).unwrap();
    std::fs::write(cut.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    let gguf = std::fs::read(format!("{}.gguf", fixture("gemma1-bf16"))).unwrap();
    let cut_gguf = dir.join("truncated.gguf");
    std::fs::write(&cut_gguf, &gguf[..gguf.len() / 2]).unwrap();
    let not_gguf = dir.join("not.gguf");
    std::fs::write(&not_gguf, b"definitely not a model").unwrap();
    let model = fixture("gemma2-bf16");
    let long_prompt = "word ".repeat(100);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "generate",
                "--model",
                cut_gguf.to_str().unwrap(),
                "--prompt",
                "hi",
            ],
            "truncated",
        ),
        (
            vec![
                "generate",
                "--model",
                not_gguf.to_str().unwrap(),
                "--prompt",
                "hi",
            ],
            "not a valid GGUF file",
        ),
        (
            vec!["generate", "--model", "/no/such/dir", "--prompt", "hi"],
            "not found",
        ),
        (
            vec![
                "generate",
                "--model",
                arch.to_str().unwrap(),
                "--prompt",
                "hi",
            ],
            "unsupported architecture `llama`",
        ),
        (
            vec![
                "generate",
                "--model",
                cut.to_str().unwrap(),
                "--prompt",
                "hi",
            ],
            "truncated",
        ),
        (
            vec![
                "generate",
                "--model",
                &model,
                "--prompt",
                &long_prompt,
                "--ctx",
                "16",
            ],
            "context is full",
        ),
        (
            vec!["generate", "--model", &model, "--tokens", "2,99999"],
            "outside the vocabulary",
        ),
        (
            vec![
                "generate", "--model", &model, "--prompt", "hi", "--dtype", "q5_k",
            ],
            "unknown weight format",
        ),
    ];
    expect_clear_errors(&cases);
}

#[test]
fn generate_runs_gguf_files() {
    let (ids, generated) = golden("gemma1-bf16");
    let model = format!("{}.gguf", fixture("gemma1-bf16"));
    let out = gemma(&[
        "--backend",
        "vulkan",
        "generate",
        "--model",
        &model,
        "--tokens",
        &join(&ids),
        "--max-tokens",
        "24",
        "--kv",
        "f32",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let got: Vec<i32> = v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect();
    assert_eq!(got, generated);
}

#[test]
fn chat_reads_turns_until_exit() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemma-wgpu"))
        .args([
            "chat",
            "--model",
            &fixture("gemma2-bf16"),
            "--max-tokens",
            "4",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello there\nHow are you?\n/reset\nAgain\n/exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.matches("> ").count(), 5, "{stdout}");
    assert!(stdout.contains("(new conversation)"));
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("prompt ")).count(),
        3,
        "{stderr}"
    );
}

/// A Hugging Face cache laid out as the hub client writes it:
/// `models--owner--name/{refs/main, snapshots/<revision>/...}`.
fn fake_hub(root: &std::path::Path, repo: &str, model: &str) {
    let dir = root.join(format!("models--{}", repo.replace('/', "--")));
    let snap = dir.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs/main"), "0123abcd").unwrap();
    // An older snapshot without the files, which must not be picked.
    std::fs::create_dir_all(dir.join("snapshots/old")).unwrap();
    copy_fixture(model, &snap);
}

#[test]
fn repo_ids_resolve_in_the_hugging_face_cache() {
    let (ids, generated) = golden("gemma2-bf16");
    let root = std::env::temp_dir().join(format!("gemma-wgpu-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    fake_hub(&root.join("hub-cache"), "google/tiny-gemma", "gemma2-bf16");
    fake_hub(&root.join("hf-home/hub"), "acme/other-gemma", "gemma2-bf16");
    let run = |repo: &str, var: &str, value: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_gemma-wgpu"))
            .args([
                "--backend",
                "vulkan",
                "generate",
                "--model",
                repo,
                "--tokens",
                &join(&ids),
            ])
            .args(["--max-tokens", "24", "--kv", "f32", "--json"])
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_HOME")
            .env(var, value)
            .output()
            .unwrap()
    };
    for (repo, var, value) in [
        ("google/tiny-gemma", "HF_HUB_CACHE", root.join("hub-cache")),
        ("acme/other-gemma", "HF_HOME", root.join("hf-home")),
    ] {
        let out = run(repo, var, &value);
        assert!(
            out.status.success(),
            "{repo}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: Vec<i32> = v["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap() as i32)
            .collect();
        assert_eq!(got, generated, "{repo}");
    }
    // Not cached, and no network to fetch it: one clear line.
    let out = run("google/not-cached", "HF_HUB_CACHE", &root.join("hub-cache"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("not in the Hugging Face cache") && !err.contains("panicked"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn more_bad_input_gets_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("gemma-wgpu-bad2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let copy = |name: &str| {
        let d = dir.join(name);
        copy_fixture("gemma2-f32", &d);
        d
    };
    // A corrupt tokenizer.json.
    let tok = copy("tokenizer");
    std::fs::write(tok.join("tokenizer.json"), "{ this is not a tokenizer").unwrap();
    // A misshapen tensor: config says a larger hidden size than the weights have.
    let shape = copy("shape");
    let cfg = std::fs::read_to_string(shape.join("config.json")).unwrap();
    std::fs::write(
        shape.join("config.json"),
        cfg.replace("\"intermediate_size\": 192", "\"intermediate_size\": 224"),
    )
    .unwrap();
    // A missing tensor and an unsupported dtype, written as safetensors.
    let bytes = std::fs::read(fixture("gemma2-f32") + "/model.safetensors").unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let write = |d: &std::path::Path, skip: &str, as_i32: &str| {
        let tensors: Vec<(String, safetensors::tensor::TensorView)> = st
            .tensors()
            .into_iter()
            .filter(|(n, _)| n != skip)
            .map(|(n, t)| {
                let view = if n == as_i32 {
                    safetensors::tensor::TensorView::new(
                        safetensors::Dtype::I32,
                        t.shape().to_vec(),
                        t.data(),
                    )
                    .unwrap()
                } else {
                    t
                };
                (n, view)
            })
            .collect();
        safetensors::serialize_to_file(tensors, None, &d.join("model.safetensors")).unwrap();
    };
    let missing = copy("missing");
    write(&missing, "model.layers.1.mlp.up_proj.weight", "");
    let dtype = copy("dtype");
    write(&dtype, "", "model.layers.0.self_attn.q_proj.weight");
    let model = fixture("gemma2-f32");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "generate",
                "--model",
                tok.to_str().unwrap(),
                "--prompt",
                "hi",
            ],
            "tokenizer",
        ),
        (
            vec![
                "generate",
                "--model",
                shape.to_str().unwrap(),
                "--prompt",
                "hi",
            ],
            "expected shape [224, 96], found [192, 96]",
        ),
        (
            vec![
                "generate",
                "--model",
                missing.to_str().unwrap(),
                "--prompt",
                "hi",
            ],
            "model.layers.1.mlp.up_proj.weight`: missing",
        ),
        (
            vec![
                "generate",
                "--model",
                dtype.to_str().unwrap(),
                "--prompt",
                "hi",
            ],
            "unsupported dtype I32",
        ),
        (
            vec![
                "--backend",
                "metal",
                "generate",
                "--model",
                &model,
                "--prompt",
                "hi",
            ],
            "apt-get install -y mesa-vulkan-drivers",
        ),
        (
            vec![
                "--backend",
                "vulkan",
                "generate",
                "--model",
                &model,
                "--prompt",
                "hi",
                "--ctx",
                "100000",
            ],
            "exceed the model's context of 8192",
        ),
        // A device whose bindings hold 16 KiB cannot take the 8192-position cache.
        (
            vec![
                "--backend",
                "vulkan",
                "--max-binding-size",
                "16384",
                "generate",
                "--model",
                &model,
                "--prompt",
                "hi",
                "--ctx",
                "8192",
            ],
            "use --ctx",
        ),
    ];
    expect_clear_errors(&cases);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_gemma_3_270m_alias_runs_the_real_model() {
    let out = gemma(&[
        "--backend",
        "vulkan",
        "generate",
        "--model",
        "gemma-3-270m",
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "3",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["token_ids"], serde_json::json!([506, 5279, 529]));
}

// Hostile model files: each class of broken or malicious file gets one short printable line
// on stderr and exit code 1, before the GPU is touched, never a panic, an abort, a hang or a
// huge allocation.

#[path = "common/gguf_writer.rs"]
mod gguf_writer;

use gguf_writer::{GgufFile, Kv, tiny_gemma};

/// Runs gemma-wgpu, failing the test (and killing it) if it is still running after `secs`:
/// a loader that blocks on a FIFO must not hang the suite.
fn gemma_within(args: &[&str], secs: u64) -> std::process::Output {
    use std::process::Stdio;
    let child = Command::new(env!("CARGO_BIN_EXE_gemma-wgpu"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .spawn()
        .expect("run gemma-wgpu");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || drop(tx.send(child.wait_with_output())));
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(out) => out.expect("wait for gemma-wgpu"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{args:?} was still running after {secs} s");
        }
    }
}

/// `args` fail with exit code 1 and exactly one line on stderr: `Error: ` and a message
/// containing `expected`, at most 400 bytes, without control characters.
fn expect_one_line(args: &[&str], expected: &str) {
    let out = gemma_within(args, 120);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}:\n{err}");
    let line = err.strip_suffix('\n').unwrap_or(&err);
    assert!(
        line.starts_with("Error: ") && !line.contains('\n'),
        "{args:?}: not one error line:\n{err}"
    );
    assert!(line.len() <= 400, "{args:?}: {} bytes: {line}", line.len());
    assert!(
        !line.chars().any(char::is_control),
        "{args:?}: control characters in {line:?}"
    );
    assert!(
        line.contains(expected),
        "{args:?}: expected `{expected}` in:\n{line}"
    );
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gemma-wgpu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Each (case, file, expected) written as `dir/case.gguf` and run: one line naming `expected`.
fn expect_gguf_errors(dir: &std::path::Path, cases: Vec<(&str, GgufFile, &str)>) {
    for (case, file, expected) in cases {
        let path = dir.join(format!("{case}.gguf"));
        std::fs::write(&path, file.bytes()).unwrap();
        expect_one_line(
            &[
                "generate",
                "--model",
                path.to_str().unwrap(),
                "--prompt",
                "hi",
            ],
            expected,
        );
    }
}

fn with(f: impl FnOnce(&mut GgufFile)) -> GgufFile {
    let mut g = tiny_gemma("gemma2");
    f(&mut g);
    g
}

#[test]
fn gguf_offsets_sizes_and_alignment_cannot_wrap_around() {
    let dir = scratch("wrap");
    // The data section starts at a multiple of 32, so 2^64 - data_start is aligned and
    // wraps a tensor exactly onto the file's first byte.
    let data_start = tiny_gemma("gemma2").data_start();
    let cases = vec![
        (
            "offset-near-2-64",
            with(|g| g.tensor_mut("blk.0.attn_q.weight").offset = Some(u64::MAX - 31)),
            "lies outside the file",
        ),
        (
            "offset-wraps-to-start",
            with(|g| g.tensor_mut("blk.0.attn_q.weight").offset = Some(data_start.wrapping_neg())),
            "lies outside the file",
        ),
        (
            "dims-overflow",
            with(|g| g.tensor_mut("output_norm.weight").dims = vec![1 << 32, 1 << 32, 1 << 32]),
            "lies outside the file",
        ),
        (
            "alignment-2-63",
            with(|g| {
                g.set("general.alignment", Kv::U64(1 << 63));
            }),
            "general.alignment 9223372036854775808 is not a power of two from 1 to 1048576",
        ),
        (
            "alignment-u64-max",
            with(|g| {
                g.set("general.alignment", Kv::U64(u64::MAX));
            }),
            "is not a power of two from 1 to 1048576",
        ),
    ];
    expect_gguf_errors(&dir, cases);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn structurally_invalid_gguf_files_are_refused() {
    let dir = scratch("structure");
    let q = tiny_gemma("gemma2").offset_of("blk.0.attn_q.weight");
    let mut cases = vec![
        (
            "overlap",
            with(|g| g.tensor_mut("blk.0.attn_k.weight").offset = Some(q)),
            "overlap",
        ),
        (
            "misaligned",
            with(|g| g.tensor_mut("blk.0.attn_q.weight").offset = Some(q + 4)),
            "is not a multiple of the alignment 32",
        ),
        (
            "duplicate-name",
            with(|g| g.tensor_mut("blk.1.attn_q.weight").name = "blk.0.attn_q.weight".into()),
            "tensor `blk.0.attn_q.weight` is listed twice",
        ),
        (
            "longer-than-its-data",
            with(|g| {
                let last = g.tensors.last_mut().unwrap();
                last.dims[0] *= 64;
            }),
            "truncated: tensor `blk.1.post_ffw_norm.weight` ends at byte",
        ),
        (
            "more-tensors-than-listed",
            with(|g| g.n_tensors = Some(g.tensors.len() as u64 + 1)),
            "not a valid GGUF file",
        ),
        (
            "unknown-type",
            with(|g| g.tensor_mut("blk.0.attn_q.weight").ty = 4),
            "GGML type 4, which ggml does not define",
        ),
        (
            "duplicate-key",
            with(|g| {
                g.kv.push(("gemma2.block_count".into(), Kv::U32(2)));
            }),
            "duplicate metadata key `gemma2.block_count`",
        ),
    ];
    for alignment in [0u32, 3, 7] {
        cases.push((
            match alignment {
                0 => "alignment-0",
                3 => "alignment-3",
                _ => "alignment-7",
            },
            with(|g| {
                g.set("general.alignment", Kv::U32(alignment));
            }),
            "is not a power of two from 1 to 1048576",
        ));
    }
    expect_gguf_errors(&dir, cases);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn header_counts_cannot_bomb_memory_or_the_stack() {
    let dir = scratch("bombs");
    // Arrays nested 100,000 deep: (array of arrays, 1 element) repeated.
    let mut nested = vec![];
    for _ in 0..100_000 {
        nested.extend(9u32.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
    }
    nested.extend(0u32.to_le_bytes());
    nested.extend(0u64.to_le_bytes());
    let mut huge_array = 0u32.to_le_bytes().to_vec();
    huge_array.extend((1u64 << 61).to_le_bytes());
    let cases = vec![
        (
            "n-tensors",
            with(|g| g.n_tensors = Some(1 << 60)),
            "tensors cannot fit in the",
        ),
        (
            "n-kv",
            with(|g| g.n_kv = Some(u64::MAX)),
            "metadata entries cannot fit in the",
        ),
        (
            "array-length",
            with(|g| {
                g.set("general.bomb", Kv::Raw(9, huge_array.clone()));
            }),
            "array elements cannot fit in the",
        ),
        (
            "nested-arrays",
            with(|g| {
                g.set("general.bomb", Kv::Raw(9, nested.clone()));
            }),
            "metadata arrays nested more than 4 deep",
        ),
        (
            "block-count",
            with(|g| {
                g.set("gemma2.block_count", Kv::U64(1 << 40));
            }),
            "block_count` is 1099511627776, but the file's 24 tensors hold at most 2 layers",
        ),
        (
            "layers-missing",
            with(|g| {
                g.tensors.retain(|t| !t.name.starts_with("blk.1."));
                g.tensors.extend(
                    tiny_gemma("gemma2")
                        .tensors
                        .into_iter()
                        .filter(|t| t.name.starts_with("blk.1.") && !t.name.contains("ffn_down")),
                );
            }),
            "tensor `blk.1.ffn_down.weight`: missing",
        ),
    ];
    expect_gguf_errors(&dir, cases);
    // An 8 GiB sparse file whose header claims 2^28 tensors: bounded by the bytes the
    // header may take, refused at once.
    let sparse = dir.join("sparse.gguf");
    std::fs::write(&sparse, with(|g| g.n_tensors = Some(1 << 28)).bytes()).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&sparse)
        .unwrap();
    if f.set_len(8 << 30).is_ok() {
        drop(f);
        expect_one_line(
            &[
                "generate",
                "--model",
                sparse.to_str().unwrap(),
                "--prompt",
                "hi",
            ],
            "268435456 tensors cannot fit in the",
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn values_that_break_the_math_are_refused_by_name() {
    let dir = scratch("math");
    // config.json: each edit of the gemma2-f32 fixture's config, and the field it must name.
    let config = std::fs::read_to_string(fixture("gemma2-f32") + "/config.json").unwrap();
    let json: serde_json::Value = serde_json::from_str(&config).unwrap();
    for (field, value, expected) in [
        (
            "sliding_window",
            serde_json::json!(0),
            "sliding_window is 0",
        ),
        (
            "rms_norm_eps",
            serde_json::json!(-1e-6),
            "rms_norm_eps is -0.000001",
        ),
        (
            "query_pre_attn_scalar",
            serde_json::json!(0),
            "query_pre_attn_scalar is 0",
        ),
        (
            "num_hidden_layers",
            serde_json::json!(0),
            "num_hidden_layers is 0",
        ),
        (
            "num_hidden_layers",
            serde_json::json!(1u64 << 40),
            "num_hidden_layers is 1099511627776",
        ),
        (
            "num_key_value_heads",
            serde_json::json!(2),
            "not a multiple of 2 kv heads",
        ),
        (
            "num_key_value_heads",
            serde_json::json!(4),
            "num_key_value_heads is 4; expected 1 to 3",
        ),
        ("head_dim", serde_json::json!(0), "head_dim is 0"),
        (
            "vocab_size",
            serde_json::json!(1000),
            "has 520 rows, but vocab_size is 1000",
        ),
        (
            "final_logit_softcapping",
            serde_json::json!(0.0),
            "final_logit_softcapping is 0",
        ),
        (
            "attn_logit_softcapping",
            serde_json::json!(-50.0),
            "attn_logit_softcapping is -50",
        ),
        (
            "rope_parameters",
            serde_json::json!({"rope_theta": 0.0}),
            "rope_theta is 0",
        ),
        (
            "rope_parameters",
            serde_json::json!({"rope_theta": 1e300}),
            "rope_theta is inf",
        ),
    ] {
        let case = dir.join(format!("{field}-{value}"));
        copy_fixture("gemma2-f32", &case);
        let mut j = json.clone();
        j[field] = value;
        std::fs::write(case.join("config.json"), j.to_string()).unwrap();
        expect_one_line(
            &[
                "generate",
                "--model",
                case.to_str().unwrap(),
                "--prompt",
                "hi",
            ],
            expected,
        );
    }
    // GGUF metadata: the same rules, naming the keys.
    let cases = vec![
        (
            "window-0",
            with(|g| {
                g.set("gemma2.attention.sliding_window", Kv::U32(0));
            }),
            "metadata `gemma2.attention.sliding_window` is 0",
        ),
        (
            "eps-nan",
            with(|g| {
                g.set("gemma2.attention.layer_norm_rms_epsilon", Kv::F32(f32::NAN));
            }),
            "metadata `gemma2.attention.layer_norm_rms_epsilon` is NaN",
        ),
        (
            "theta-negative",
            with(|g| {
                g.set("gemma2.rope.freq_base", Kv::F32(-10_000.0));
            }),
            "metadata `gemma2.rope.freq_base` is -10000",
        ),
        (
            "theta-infinite",
            with(|g| {
                g.set("gemma2.rope.freq_base", Kv::F32(f32::INFINITY));
            }),
            "metadata `gemma2.rope.freq_base` is inf",
        ),
        (
            "key-length-0",
            with(|g| {
                g.set("gemma2.attention.key_length", Kv::U32(0));
            }),
            "metadata `gemma2.attention.key_length` is 0",
        ),
        (
            "heads-0",
            with(|g| {
                g.set("gemma2.attention.head_count", Kv::U32(0));
            }),
            "metadata `gemma2.attention.head_count` is 0",
        ),
        (
            "kv-heads",
            with(|g| {
                g.set("gemma2.attention.head_count_kv", Kv::U32(3));
            }),
            "metadata `gemma2.attention.head_count_kv` is 3",
        ),
        (
            "softcap-nan",
            with(|g| {
                g.set("gemma2.final_logit_softcapping", Kv::F32(f32::NAN));
            }),
            "metadata `gemma2.final_logit_softcapping` is NaN",
        ),
        (
            "vocab",
            with(|g| {
                g.set("gemma2.vocab_size", Kv::U32(1000));
            }),
            "metadata `gemma2.vocab_size` is 1000, but token_embd.weight has 32 rows",
        ),
        (
            "tokens",
            with(|g| {
                let mut t = gguf_writer::tiny_tokens();
                t.pop();
                g.set("tokenizer.ggml.tokens", Kv::Strs(t));
            }),
            "tokenizer.ggml.tokens has 31 tokens, but token_embd.weight has 32 rows",
        ),
    ];
    expect_gguf_errors(&dir, cases);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn logits_that_are_not_finite_are_an_error_naming_the_layer() {
    let dir = scratch("nan");
    // One NaN in layer 1's post-attention norm weight.
    let nan = dir.join("nan");
    copy_fixture("gemma2-f32", &nan);
    let bytes = std::fs::read(fixture("gemma2-f32") + "/model.safetensors").unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let poisoned = "model.layers.1.post_attention_layernorm.weight";
    let mut data = st.tensor(poisoned).unwrap().data().to_vec();
    data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let view = if n == poisoned {
                safetensors::tensor::TensorView::new(t.dtype(), t.shape().to_vec(), &data).unwrap()
            } else {
                t
            };
            (n, view)
        })
        .collect();
    safetensors::serialize_to_file(tensors, None, &nan.join("model.safetensors")).unwrap();
    let model = nan.to_str().unwrap();
    let out = dir.join("logits.safetensors");
    for args in [
        vec![
            "--backend",
            "vulkan",
            "generate",
            "--model",
            model,
            "--prompt",
            "hi",
        ],
        vec![
            "--backend",
            "vulkan",
            "generate",
            "--model",
            model,
            "--prompt",
            "hi",
            "--temperature",
            "0.8",
        ],
        vec![
            "--backend",
            "vulkan",
            "logits",
            "--model",
            model,
            "--prompt",
            "Once upon a time",
            "--out",
            out.to_str().unwrap(),
        ],
    ] {
        expect_one_line(
            &args,
            "the logits are not finite (NaN or infinity), first in the output of layer 1 of 3",
        );
    }
    assert!(!out.exists(), "no logits written");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn model_directories_refuse_escaping_shards_and_special_files() {
    let dir = scratch("dirs");
    let index =
        std::fs::read_to_string(fixture("gemma2-bf16") + "/model.safetensors.index.json").unwrap();
    for (case, shard) in [
        ("parent", "../gemma2-bf16/model-00001-of-00010.safetensors"),
        ("absolute", "/etc/passwd"),
        ("fragment", "model-00001-of-00010.safetensors#x"),
        ("query", "model-00001-of-00010.safetensors?download=true"),
        ("subdir", "sub/model-00001-of-00010.safetensors"),
    ] {
        let d = dir.join(case);
        copy_fixture("gemma2-bf16", &d);
        std::fs::write(
            d.join("model.safetensors.index.json"),
            index.replacen("model-00001-of-00010.safetensors", shard, 1),
        )
        .unwrap();
        expect_one_line(
            &["generate", "--model", d.to_str().unwrap(), "--prompt", "hi"],
            "is not a plain file name",
        );
    }
    // Special files where regular ones belong: refused without blocking on them.
    let mkfifo = |p: &std::path::Path| {
        let _ = std::fs::remove_file(p);
        assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
    };
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        let d = dir.join(format!("fifo-{file}"));
        copy_fixture("gemma2-f32", &d);
        mkfifo(&d.join(file));
        expect_one_line(
            &["generate", "--model", d.to_str().unwrap(), "--prompt", "hi"],
            "is a FIFO, socket or device, not a regular file",
        );
    }
    let d = dir.join("shard-is-a-directory");
    copy_fixture("gemma2-f32", &d);
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    std::fs::create_dir(d.join("model.safetensors")).unwrap();
    expect_one_line(
        &["generate", "--model", d.to_str().unwrap(), "--prompt", "hi"],
        "is a directory, not a regular file",
    );
    let fifo = dir.join("model.gguf");
    mkfifo(&fifo);
    for model in [fifo.to_str().unwrap(), "/dev/zero"] {
        expect_one_line(
            &["generate", "--model", model, "--prompt", "hi"],
            "is a FIFO, socket or device, not a model directory or a .gguf file",
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn file_content_in_errors_is_escaped_and_cut_short() {
    let dir = scratch("escape");
    let evil = format!("\u{1b}[2J\u{1b}]0;owned\u{7}\r\n{}", "A".repeat(120_000));
    let cases = vec![
        (
            "architecture",
            with(|g| {
                g.set("general.architecture", Kv::Str(evil.clone()));
            }),
            "unsupported architecture `\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\u{d}\\u{a}AAA",
        ),
        (
            "tensor-name",
            with(|g| {
                g.tensor_mut("blk.0.attn_q.weight").name = evil.clone();
                g.tensor_mut("blk.0.attn_k.weight").name = evil.clone();
            }),
            "is listed twice",
        ),
        (
            "tokenizer-model",
            with(|g| {
                g.set("tokenizer.ggml.model", Kv::Str(evil.clone()));
            }),
            "tokenizer.ggml.model `\\u{1b}[2J",
        ),
    ];
    expect_gguf_errors(&dir, cases);
    // A safetensors tensor named with escapes, in a dtype the engine does not read.
    let d = dir.join("safetensors");
    copy_fixture("gemma2-f32", &d);
    let data = vec![0u8; 8];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1], &data).unwrap();
    safetensors::serialize_to_file([(evil.as_str(), view)], None, &d.join("model.safetensors"))
        .unwrap();
    expect_one_line(
        &["generate", "--model", d.to_str().unwrap(), "--prompt", "hi"],
        "unsupported dtype I64",
    );
    // config.json: a value serde quotes in its error.
    let d = dir.join("config");
    copy_fixture("gemma2-f32", &d);
    std::fs::write(
        d.join("config.json"),
        serde_json::json!({ "model_type": "gemma2", "hidden_size": evil }).to_string(),
    )
    .unwrap();
    expect_one_line(
        &["generate", "--model", d.to_str().unwrap(), "--prompt", "hi"],
        "invalid type: string",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
