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

#[test]
fn tokenize_prints_ids_from_a_directory_or_a_gguf_file() {
    let text = "Hello   world<start_of_turn>user\n  x";
    let ids = |args: &[&str]| -> String {
        let out = gemma(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let dir = fixture("gemma1-bf16");
    let gguf = format!("{dir}.gguf");
    // The same tokenizer read from tokenizer.json and rebuilt from GGUF metadata.
    let plain = ids(&["tokenize", "-m", &dir, "-p", text]);
    assert_eq!(
        plain,
        ids(&["tokenize", "--model", &gguf, "--prompt", text])
    );
    assert!(
        plain.starts_with("[2, ") && plain.ends_with("]\n"),
        "{plain}"
    );
    // --special reads the chat markup as its control token (id 4 in this vocabulary).
    let special = ids(&["tokenize", "-m", &dir, "-p", text, "--special"]);
    assert_eq!(
        special,
        ids(&["tokenize", "-m", &gguf, "-p", text, "--special"])
    );
    assert!(
        special.contains(", 4, ") && !plain.contains(", 4, "),
        "{special}"
    );
    assert!(special.len() < plain.len());
    // --no-bos, --file, and --json with pieces and byte ranges.
    let tmp = std::env::temp_dir().join(format!("gemma-wgpu-tokenize-{}", std::process::id()));
    std::fs::write(&tmp, text).unwrap();
    let file = tmp.to_str().unwrap();
    let no_bos = ids(&["tokenize", "-m", &gguf, "-f", file, "--no-bos"]);
    assert_eq!(no_bos.replacen("[", "[2, ", 1), plain);
    let json: serde_json::Value =
        serde_json::from_str(&ids(&["tokenize", "-m", &gguf, "-f", file, "--json"])).unwrap();
    std::fs::remove_file(&tmp).unwrap();
    let tokens = json["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), json["ids"].as_array().unwrap().len());
    assert_eq!(tokens[0]["piece"], "<bos>");
    let mut covered = String::new();
    for t in &tokens[1..] {
        let (start, end) = (t["start"].as_u64().unwrap(), t["end"].as_u64().unwrap());
        covered.push_str(&text[start as usize..end as usize]);
    }
    assert_eq!(covered, text, "the byte ranges cover the text in order");
    expect_clear_errors(&[
        (
            vec!["tokenize", "-m", "/no/such/model", "-p", "x"],
            "/no/such/model",
        ),
        (
            vec!["tokenize", "-m", &dir, "-f", "/no/such/file"],
            "/no/such/file",
        ),
        (vec!["tokenize", "-m", &dir], "--prompt"),
    ]);
}
