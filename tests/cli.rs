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
        "int64: yes",
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
    // A directory that holds no model.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let empty = empty.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["generate", "--model", empty, "--prompt", "hi"],
            "not a model: a directory without config.json",
        ),
        (
            vec!["bench", "--model", empty, "-p", "1", "-n", "1"],
            "not a model: a directory without config.json",
        ),
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
    // The prompts go to stderr, the replies alone to stdout.
    assert_eq!(stderr.matches("> ").count(), 5, "{stderr}");
    assert!(!stdout.contains("> "), "{stdout}");
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

/// Each command fails with exit status 1 and one line on stderr holding `expected`.
fn expect_one_line(cases: &[(Vec<&str>, &str)]) {
    for (args, expected) in cases {
        let out = gemma(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(expected) && err.trim_end().lines().count() == 1,
            "{args:?}: expected one line with `{expected}`, found:\n{err}"
        );
    }
}

#[test]
fn out_of_range_settings_get_their_range_before_any_loading() {
    let model = fixture("gemma2-bf16");
    let m = model.as_str();
    let generate = |extra: &[&'static str]| -> Vec<&str> {
        let mut v = vec!["generate", "--model", m, "--prompt", "hi"];
        v.extend_from_slice(extra);
        v
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            generate(&["--temperature", "nan"]),
            "--temperature must be a finite number >= 0 (0 is greedy), not NaN",
        ),
        (generate(&["--temperature", "-0.5"]), "not -0.5"),
        (generate(&["--temperature", "inf"]), "not inf"),
        (
            generate(&["--top-k", "-1"]),
            "--top-k must be a whole number >= 0",
        ),
        (
            generate(&["--top-p", "0"]),
            "--top-p must be in (0, 1], not 0",
        ),
        (
            generate(&["--top-p", "1.5"]),
            "--top-p must be in (0, 1], not 1.5",
        ),
        (generate(&["--min-p", "-0.1"]), "--min-p must be in [0, 1]"),
        (
            generate(&["--repetition-penalty", "0"]),
            "--repetition-penalty must be a finite number > 0",
        ),
        (generate(&["--repetition-penalty", "NaN"]), "not NaN"),
        (
            generate(&["--max-tokens", "-5"]),
            "--max-tokens must be between 0 and 1048576, not -5",
        ),
        (
            generate(&["--max-tokens", "99999999999"]),
            "not 99999999999",
        ),
        (
            vec!["chat", "--model", m, "--temperature", "nan"],
            "--temperature must be a finite number",
        ),
        (
            vec!["chat", "--model", m, "--repetition-penalty", "-1"],
            "--repetition-penalty must be a finite number > 0",
        ),
        (
            vec!["serve", "--model", m, "--queue", "18446744073709551615"],
            "--queue must be at most 65536",
        ),
        (
            vec!["serve", "--model", m, "--header-timeout", "0"],
            "--header-timeout must be a number of seconds above 0",
        ),
        (
            vec!["serve", "--model", m, "--max-connections", "0"],
            "--max-connections must be between 1 and",
        ),
        (
            vec!["bench", "--model", m, "-p", "99999999999"],
            "-p and -n must be at most",
        ),
        (
            vec!["bench", "--model", m, "--chunk", "0"],
            "--chunk must be 1 to 512 tokens",
        ),
        (
            vec!["bench", "--model", m, "--chunk", "513"],
            "--chunk must be 1 to 512 tokens",
        ),
        (
            vec!["perplexity", "--model", m, "--file", m, "--chunk", "0"],
            "--chunk must be 1 to 512 tokens",
        ),
        (
            vec!["perplexity", "--model", m, "--file", m, "--ctx", "3"],
            "--ctx must be at least 4 tokens (each chunk's second half is scored), not 3",
        ),
        (
            vec!["bench", "--model", m, "-p", "0", "-n", "0,0"],
            "nothing to measure: every -p and -n is 0",
        ),
    ];
    expect_one_line(&cases);
}

/// Runs `args` with stdout going to `stdout`, stdin empty.
fn gemma_to(args: &[&str], stdout: std::process::Stdio) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gemma-wgpu"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run gemma-wgpu")
}

#[test]
fn a_closed_stdout_ends_quietly_and_a_full_one_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("gemma-wgpu-pipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(12),
    )
    .unwrap();
    let model = fixture("gemma2-bf16");
    let m = model.as_str();
    let text = text.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["devices"],
        vec![
            "generate",
            "--model",
            m,
            "--prompt",
            "Once upon a time",
            "--max-tokens",
            "16",
        ],
        vec!["bench", "--model", m, "-p", "4", "-n", "2", "-r", "1"],
        vec!["perplexity", "--model", m, "--file", text, "--ctx", "32"],
        vec!["chat", "--model", m, "--max-tokens", "4"],
    ];
    for args in &commands {
        let args = [&["--backend", "vulkan"][..], args].concat();
        // A pipe whose reader is gone (as after `| head`): exit 0, nothing on stderr about it.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = gemma_to(&args, writer.into());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Error"),
            "{args:?}: {err}"
        );
        // A full disk: one clear line, exit 1.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = gemma_to(&args, full.into());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("No space left on device") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        if args.contains(&"perplexity") {
            assert!(
                err.contains("PPL = "),
                "the result survives on stderr: {err}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kl_bases_and_output_files_are_checked_before_the_run() {
    let dir = std::env::temp_dir().join(format!("gemma-wgpu-kl-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let fox = path("fox.txt");
    std::fs::write(
        &fox,
        "The quick brown fox jumps over the lazy dog. ".repeat(12),
    )
    .unwrap();
    let cats = path("cats.txt");
    std::fs::write(
        &cats,
        "Cats and dogs and birds live in the old house. ".repeat(12),
    )
    .unwrap();
    let model = fixture("gemma2-bf16");
    let base = path("base.safetensors");
    let ppl = |file: &str, ctx: &str, base: &str| -> Vec<String> {
        [
            "--backend",
            "vulkan",
            "perplexity",
            "--model",
            &model,
            "--file",
            file,
            "--ctx",
            ctx,
            "--kl-base",
            base,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        gemma(&args)
    };
    // Save a base, then compare with it: KL 0.
    let saved = run(&ppl(&fox, "32", &base));
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let same = run(&ppl(&fox, "32", &base));
    let stdout = String::from_utf8_lossy(&same.stdout);
    assert!(
        stdout.contains("KL divergence from") && stdout.contains("0.000000"),
        "{stdout}"
    );
    // A base with token ids outside its vocabulary (it would index past the logits).
    let bytes = std::fs::read(&base).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut ids: Vec<u32> = bytemuck::pod_collect_to_vec(st.tensor("ids").unwrap().data());
    ids[3] = 999_999;
    let ids_view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::U32,
        st.tensor("ids").unwrap().shape().to_vec(),
        bytemuck::cast_slice(&ids),
    )
    .unwrap();
    let tampered = path("tampered.safetensors");
    let tensors = vec![
        ("ids".to_string(), ids_view),
        ("logp".to_string(), st.tensor("logp").unwrap()),
        ("rest".to_string(), st.tensor("rest").unwrap()),
    ];
    safetensors::serialize_to_file(tensors, header.metadata().clone(), tampered.as_ref()).unwrap();
    // A base from before the metadata (or another program).
    let old = path("old.safetensors");
    let tensors: Vec<_> = st.tensors();
    safetensors::serialize_to_file(tensors, None, old.as_ref()).unwrap();
    let garbage = path("garbage.safetensors");
    std::fs::write(&garbage, "not a base").unwrap();
    let out_exists = path("fox.txt");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            ppl(&fox, "16", &base),
            "this KL base was made with --ctx 32; this run uses --ctx 16",
        ),
        (ppl(&cats, "32", &base), "was made from another text"),
        (
            ppl(&fox, "32", &tampered),
            "token id 999999 is outside the KL base's vocabulary",
        ),
        (ppl(&fox, "32", &old), "not a KL base file of this version"),
        (ppl(&fox, "32", &garbage), "not a KL base file"),
        (
            ppl(&fox, "32", "/no/such/dir/base.safetensors"),
            "cannot be written",
        ),
        (
            [
                "logits",
                "--model",
                &model,
                "--prompt",
                "hi",
                "--out",
                "/no/such/dir/logits.safetensors",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            "cannot be written",
        ),
        (
            [
                "logits",
                "--model",
                &model,
                "--prompt",
                "hi",
                "--out",
                &out_exists,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            "never overwritten",
        ),
    ];
    for (args, expected) in &cases {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(expected) && !err.contains("panicked"),
            "{args:?}: expected `{expected}` in:\n{err}"
        );
        // Refused before any chunk was scored.
        assert!(!err.contains("[1]"), "{args:?}: the run started:\n{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn running_out_of_gpu_memory_names_what_and_the_setting_that_helps() {
    let model = fixture("gemma2-bf16");
    let run = |memory: &str, extra: &[&str]| {
        let mut args = vec![
            "--backend",
            "vulkan",
            "--max-memory",
            memory,
            "generate",
            "--model",
            &model,
            "--prompt",
            "hi",
        ];
        args.extend_from_slice(extra);
        gemma(&args)
    };
    // The weights do not fit.
    let out = run("100000", &["--dtype", "bf16"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the adapter ran out of memory allocating `model.")
            && err.contains("a smaller --dtype than bf16 (q8_0 or q4_0)")
            && err.trim_end().lines().count() == 1
            && !err.contains("panicked"),
        "{err}"
    );
    // The weights fit, a long context's caches do not.
    let out = run("3000000", &["--ctx", "8192"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(".kv.") && err.contains("use --ctx 4096 or less (now 8192)"),
        "{err}"
    );
    // Within the limit, the same command runs.
    let out = run("100000000", &["--max-tokens", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `chat` on the tiny model with `input` piped in; returns stdout and stderr.
fn chat_with(extra: &[&str], input: &str) -> (String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let model = fixture("gemma2-bf16");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemma-wgpu"))
        .args([&["chat", "--model", &model, "--max-tokens", "4"][..], extra].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

#[test]
fn chat_answers_commands_itself_and_takes_multi_line_messages() {
    let (stdout, stderr) = chat_with(
        &["--system", "Answer briefly."],
        "/help\n/frobnicate now\n\"\"\"First line\nsecond line\n\"\"\"\n/usr/bin is a path\n/bye\nnot read\n",
    );
    assert!(
        stdout.contains("/reset") && stdout.contains("\"\"\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("(unknown command /frobnicate; /help lists the commands)"),
        "{stdout}"
    );
    // Two turns reached the model: the three-line message and the path; no command did.
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("prompt ")).count(),
        2,
        "{stderr}"
    );
    assert_eq!(stderr.matches("... ").count(), 2, "{stderr}");
}

#[test]
fn ctrl_c_at_the_chat_prompt_says_how_to_leave_and_twice_quits() {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemma-wgpu"))
        .args(["chat", "--model", &fixture("gemma2-bf16")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = vec![];
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("> ") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "chat ended before its prompt");
        seen.extend_from_slice(&buf[..n]);
    }
    let interrupt = || {
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    interrupt();
    std::thread::sleep(std::time::Duration::from_millis(300));
    interrupt();
    let status = child.wait().unwrap();
    stderr.read_to_end(&mut seen).unwrap();
    let stderr = String::from_utf8_lossy(&seen);
    assert!(
        stderr.contains("(Ctrl-C again, /exit or Ctrl-D quits)"),
        "{stderr}"
    );
    assert_eq!(status.code(), Some(130), "{stderr}");
}

/// Runs `args` with `stdin` as its input and `env` added to the environment.
fn gemma_with(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemma-wgpu"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gemma-wgpu");
    let mut input = child.stdin.take().expect("stdin");
    // The command may end without reading its input.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().expect("wait for gemma-wgpu")
}

/// The JSON object `generate --json` printed.
fn generated(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

/// The prompt's token count in the statistics line.
fn prompt_tokens(stderr: &[u8]) -> usize {
    let err = String::from_utf8_lossy(stderr);
    let at = err.find("| prompt ").expect("statistics line") + "| prompt ".len();
    err[at..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a token count")
}

#[test]
fn short_flags_prompt_files_stdin_seeds_and_finish_reasons() {
    let model = fixture("gemma2-bf16");
    let m = model.as_str();
    let dir = std::env::temp_dir().join(format!("gemma-wgpu-flags-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let long = gemma(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "4",
        "--json",
    ]);
    let long = generated(&long);
    assert_eq!(long["finish_reason"], "length");
    assert!(long["seed"].is_u64(), "{long}");
    // Short forms, a prompt file (its last line end dropped) and stdin give the same tokens.
    let file = dir.join("prompt.txt");
    std::fs::write(&file, "Once upon a time\n").unwrap();
    let file = file.to_str().unwrap();
    for (args, stdin) in [
        (vec!["-p", "Once upon a time"], ""),
        (vec!["-f", file], ""),
        (vec!["--prompt", "-"], "Once upon a time\n"),
    ] {
        let mut all = vec!["generate", "-m", m, "-n", "4", "-c", "64", "--json"];
        all.extend(args);
        let out = gemma_with(&all, stdin, &[]);
        assert_eq!(generated(&out)["token_ids"], long["token_ids"], "{all:?}");
    }
    // Without --seed each run draws a new seed, printed on stderr and in --json; with one,
    // a sampled run repeats.
    let sampled = |flags: &[&str]| {
        let mut args = vec!["generate", "-m", m, "-p", "Hello", "-n", "6", "--json"];
        args.extend_from_slice(flags);
        let out = gemma(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let v = generated(&out);
        assert!(
            err.contains(&format!("| finish_reason length | seed {}", v["seed"])),
            "{err}"
        );
        v
    };
    let (a, b) = (sampled(&["--temp", "1"]), sampled(&["--temperature", "1"]));
    assert_ne!(a["seed"], b["seed"]);
    let (a, b) = (
        sampled(&["--temp", "1", "-s", "11"]),
        sampled(&["-t", "1", "--seed", "11"]),
    );
    assert_eq!(
        (a["seed"].clone(), &a["token_ids"]),
        (11.into(), &b["token_ids"])
    );
    // A full context ends the generation with finish_reason `context`.
    let out = gemma(&["generate", "-m", m, "-p", "Hello", "-c", "6", "--json"]);
    assert_eq!(generated(&out)["finish_reason"], "context");
    // -c 0 asks for the default context (as llama.cpp's does): the fixture's 8192 positions,
    // at most 4096.
    let out = gemma(&["generate", "-m", m, "-p", "Hello", "-c", "0", "-n", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("| ctx 4096 |"),
        "{err}"
    );
    // --system goes into the chat template (Gemma 2's refuses a system turn: it opens the
    // user's message instead).
    let chat = |system: &[&str]| {
        let mut args = vec!["generate", "-m", m, "-p", "Hi", "--chat", "-n", "2"];
        args.extend_from_slice(system);
        prompt_tokens(&gemma(&args).stderr)
    };
    assert!(chat(&["--system", "Answer in French."]) > chat(&[]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_generates_in_the_chat_template_or_starts_a_chat() {
    let model = fixture("gemma2-bf16");
    let m = model.as_str();
    let run = gemma(&["run", m, "Hello there", "-n", "4"]);
    let chat = gemma(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "Hello there",
        "--chat",
        "-n",
        "4",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(run.stdout, chat.stdout);
    assert_eq!(prompt_tokens(&run.stderr), prompt_tokens(&chat.stderr));
    // A base model (this GGUF has no chat template) continues the prompt as given, without
    // the base-model warning a chat would give, and refuses a system message.
    let base = fixture("gemma2-window4096.gguf");
    let run = gemma(&["run", &base, "Hello there", "-n", "4"]);
    let plain = gemma(&["generate", "-m", &base, "-p", "Hello there", "-n", "4"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success() && !err.contains("warning"), "{err}");
    assert_eq!(run.stdout, plain.stdout);
    assert_eq!(prompt_tokens(&run.stderr), prompt_tokens(&plain.stderr));
    let out = gemma(&["run", &base, "Hello there", "--system", "Be brief."]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--system needs a chat model"),
        "{err}"
    );
    // Without a prompt: the chat, with its system message.
    let out = gemma_with(
        &["run", m, "-n", "3", "--system", "Be brief."],
        "Hi\n/exit\n",
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("/help lists the commands") && err.contains("| seed "),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("prompt ")).count(),
        1,
        "{err}"
    );
}

#[test]
fn sampling_defaults_come_from_generation_config_and_flags_override_them() {
    let dir = std::env::temp_dir().join(format!("gemma-wgpu-gencfg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_fixture("gemma2-bf16", &dir);
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"bos_token_id": 2, "eos_token_id": [1, 5], "do_sample": true, "temperature": 1.0,
            "top_k": 3, "top_p": 0.9}"#,
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let ids = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "-m",
            d,
            "-p",
            "Once upon a time",
            "-n",
            "8",
            "--json",
        ];
        args.extend_from_slice(extra);
        generated(&gemma(&args))["token_ids"].clone()
    };
    // The file's settings are what the flags would say.
    let file = ids(&["-s", "5"]);
    assert_eq!(
        file,
        ids(&["-s", "5", "-t", "1", "--top-k", "3", "--top-p", "0.9"])
    );
    // A flag overrides the file: temperature 0 is transformers' greedy continuation.
    let greedy = ids(&["-t", "0"]);
    let plain = gemma(&[
        "generate",
        "-m",
        &fixture("gemma2-bf16"),
        "-p",
        "Once upon a time",
        "-n",
        "8",
        "--json",
    ]);
    assert_eq!(greedy, generated(&plain)["token_ids"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--profile` breaks a prefill step (the prompt's last, of `--chunk` tokens) and a decode token
/// into kernels, as JSON lines after the test's own line.
#[test]
fn bench_profiles_a_prefill_step_and_a_decode_token() {
    let model = fixture("gemma2-bf16");
    let out = gemma(&[
        "--backend",
        "vulkan",
        "bench",
        "-m",
        &model,
        "-p",
        "10",
        "-n",
        "0",
        "-r",
        "1",
        "--chunk",
        "4",
        "--profile",
        "-o",
        "jsonl",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["n_prompt"], 10);
    for (line, kind, tokens) in [(&lines[1], "prefill", 4), (&lines[2], "decode", 1)] {
        assert_eq!(line["profile"], kind, "{line}");
        assert_eq!(line["tokens"], tokens, "{line}");
        assert_eq!(line["context"], 10, "{line}");
        assert_eq!(line["command_buffers_per_step"], 1, "{line}");
        let kernels = line["kernels"].as_array().unwrap();
        let dispatches: u64 = kernels
            .iter()
            .map(|k| k["dispatches"].as_u64().unwrap())
            .sum();
        assert_eq!(
            line["dispatches_per_step"].as_u64().unwrap(),
            dispatches,
            "{line}"
        );
        assert!(line["gpu_us"].as_f64().unwrap() > 0.0, "{line}");
        // What a dispatch costs at least, measured on the same adapter (never zero: a pass of
        // dispatches takes time).
        assert!(line["dispatch_floor_us"].as_f64().unwrap() > 0.0, "{line}");
        // The products run as matmul in a prefill step, as matvec in a decode step.
        let product = if kind == "prefill" {
            "matmul"
        } else {
            "matvec"
        };
        assert!(
            kernels
                .iter()
                .any(|k| k["kernel"].as_str().unwrap().starts_with(product)),
            "{line}"
        );
    }
}

/// On a CPU adapter a decode token's Q4_0 products take int8 x, each input quantized by the
/// kernel that writes it, with no quantize_q8 pass: q|k|v and gate|up read their
/// residual_norm's quantization (the first q|k|v the embedding's, the lm_head the final
/// norm's), o_proj reads attention's and down_proj the GeGLU product's. So the int8 path
/// takes as many dispatches per token as f32 activations, which write no quantization.
#[test]
fn int8_decode_products_take_their_inputs_quantized_by_their_writers() {
    let model = fixture("gemma2-bf16");
    let layers = 4u64;
    let mut totals = vec![];
    for activations in ["auto", "f32"] {
        let out = gemma(&[
            "--backend",
            "vulkan",
            "--activations",
            activations,
            "bench",
            "-m",
            &model,
            "--dtype",
            "q4_0",
            "-p",
            "4",
            "-n",
            "0",
            "-r",
            "1",
            "--profile",
            "-o",
            "jsonl",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let decode: serde_json::Value = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["profile"] == "decode")
            .expect("a decode profile");
        let count = |name: &str| -> u64 {
            let kernels = decode["kernels"].as_array().unwrap();
            kernels
                .iter()
                .filter(|k| k["kernel"] == name)
                .map(|k| k["dispatches"].as_u64().unwrap())
                .sum()
        };
        let what = format!("--activations {activations}: {decode}");
        let int8 = activations == "auto";
        let quantized = |n: u64| if int8 { n } else { 0 };
        assert_eq!(count("quantize_q8"), 0, "{what}");
        assert_eq!(
            count("residual_norm.quant"),
            quantized(2 * layers - 1),
            "{what}"
        );
        assert_eq!(
            count("residual_norm"),
            2 * layers - 1 - quantized(2 * layers - 1),
            "{what}"
        );
        assert_eq!(count("residual_norm.flags.quant"), quantized(1), "{what}");
        assert_eq!(count("residual_norm.flags"), 1 - quantized(1), "{what}");
        assert_eq!(count("embedding.q4_0.quant"), quantized(1), "{what}");
        // Attention also does rope_store's work in a decode step (one query).
        assert_eq!(
            count("attention.quant.partial_rope"),
            quantized(layers),
            "{what}"
        );
        assert_eq!(count("rope_store"), 0, "{what}");
        assert_eq!(
            count("matvec.q4_0.geglu.quant"),
            quantized(layers),
            "{what}"
        );
        totals.push(decode["dispatches_per_step"].as_u64().unwrap());
    }
    assert_eq!(totals[0], totals[1], "dispatches per token, int8 vs f32");
}

#[test]
fn bench_takes_lists_and_writes_llama_bench_fields() {
    let model = fixture("gemma2-bf16");
    let m = model.as_str();
    let out = gemma(&[
        "--backend",
        "vulkan",
        "bench",
        "-m",
        m,
        "-p",
        "4,8",
        "-n",
        "2",
        "-r",
        "1",
        "-o",
        "json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Progress on stderr, a line as each test starts and ends.
    for needle in [
        "bench: test 1/3: pp4",
        "bench: test 2/3: pp8",
        "bench: test 3/3: tg2",
    ] {
        assert_eq!(err.matches(needle).count(), 2, "{err}");
    }
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let tests: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["n_prompt"].as_u64().unwrap(),
                r["n_gen"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(tests, [(4, 0), (8, 0), (0, 2)]);
    for r in &rows {
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["stddev_ts"].as_f64().unwrap() >= 0.0, "{r}");
        assert!(r["model_size"].as_u64().unwrap() > 0, "{r}");
        assert!(r["model_n_params"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["model_type"], "bf16", "{r}");
        assert_eq!(r["backends"], "Vulkan", "{r}");
        assert!(r["gpu_info"].as_str().unwrap().contains("llvmpipe"), "{r}");
    }
    // csv: a header of llama-bench's names and a row per test; --json: as -o jsonl, with
    // the fields it had before.
    let out = gemma(&[
        "--backend",
        "vulkan",
        "bench",
        "-m",
        m,
        "-p",
        "4",
        "-n",
        "0",
        "-r",
        "1",
        "-o",
        "csv",
    ]);
    let csv = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[0].contains("n_prompt,n_gen,test,avg_ts,stddev_ts"),
        "{csv}"
    );
    let out = gemma(&[
        "--backend",
        "vulkan",
        "bench",
        "-m",
        m,
        "-p",
        "0",
        "-n",
        "2",
        "-r",
        "1",
        "--json",
    ]);
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in [
        "avg_ts",
        "tokens_per_second",
        "stddev",
        "dtype",
        "adapter",
        "test",
    ] {
        assert!(!row[field].is_null(), "{field} missing from {row}");
    }
    // --compare sets llama-bench's output beside ours as ratios; --plot draws a group of
    // bars per test, one per program, with a legend.
    let svg = std::env::temp_dir().join(format!("gemma-wgpu-bench-{}.svg", std::process::id()));
    let peer = svg.with_extension("json");
    let llama_row = |p: u32, g: u32, ts: f64| {
        serde_json::json!({"build_commit": "0c1e570", "backends": "CPU", "devices": "none",
            "n_prompt": p, "n_gen": g, "avg_ts": ts, "stddev_ts": 1.0})
    };
    let rows = serde_json::json!([llama_row(4, 0, 1000.0), llama_row(0, 2, 50.0)]);
    std::fs::write(&peer, rows.to_string()).unwrap();
    let args = ["bench", "-m", m, "-p", "4", "-n", "2", "-r", "1", "--plot"];
    let compare = ["--compare", peer.to_str().unwrap()];
    let out = gemma(&[&args[..], &[svg.to_str().unwrap()], &compare].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for test in ["pp4", "tg2"] {
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("bench: {test}: ")))
            .unwrap_or_else(|| panic!("no {test} ratio in {err}"));
        assert!(line.contains(" × llama.cpp CPU (0c1e570) ("), "{line}");
    }
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg") && drawn.trim_end().ends_with("</svg>"));
    for text in [
        "pp4",
        "tg2",
        "1000.0",
        "50.0",
        "gemma-wgpu Vulkan",
        "llama.cpp CPU (0c1e570)",
    ] {
        assert!(drawn.contains(text), "{text} not drawn: {drawn}");
    }
    std::fs::remove_file(&svg).unwrap();
    // A file that is not llama-bench's output is refused before anything loads.
    std::fs::write(&peer, "[{\"n_prompt\": 4}]").unwrap();
    let out = gemma(&[&args[..], &[svg.to_str().unwrap()], &compare].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("lacks n_prompt, n_gen or avg_ts"),
        "{err}"
    );
    assert!(!err.contains("warm-up") && !svg.exists(), "{err}");
    std::fs::remove_file(&peer).unwrap();
    // `adapter` names the backend and device type, as before.
    assert!(
        row["adapter"].as_str().unwrap().contains("(Vulkan, Cpu)"),
        "{row}"
    );
}

#[test]
fn a_gguf_loads_with_a_summary_and_benches_as_its_file_type() {
    let path = format!(
        "{}/.cache/gemma-wgpu/gemma-3-270m-q4_k_m.gguf",
        std::env::var("HOME").unwrap()
    );
    let out = gemma(&[
        "--backend",
        "vulkan",
        "bench",
        "-m",
        "gemma-3-270m",
        "-p",
        "4",
        "-n",
        "2",
        "-r",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{err}");
    // The type is the file's (Q4_K_M), not the embedding's format.
    let header = "| model | size | params | type | backend | test | t/s |";
    assert!(table.starts_with(header), "{table}");
    assert!(
        table.contains("| 268.09M | Q4_K_M | Vulkan (llvmpipe"),
        "{table}"
    );
    assert!(
        table.contains("| pp4 |") && table.contains("| tg2 |"),
        "{table}"
    );
    // One summary line after the load; the weights counted are the file's bytes.
    let summary = err
        .lines()
        .find(|l| l.starts_with("model gemma-3-270m | arch gemma3 | 268.09M params | Q4_K_M, "))
        .unwrap_or_else(|| panic!("no summary in {err}"));
    assert!(summary.contains("| ctx 64 | kv f16, "), "{summary}");
    let mib: f64 = summary
        .split("Q4_K_M, ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let file_mib = std::fs::metadata(path).unwrap().len() as f64 / (1 << 20) as f64;
    assert!(
        mib <= file_mib && mib >= 0.9 * file_mib,
        "{mib} of {file_mib} MiB"
    );
}

#[test]
fn rust_backtrace_does_not_turn_user_errors_into_backtraces() {
    let model = fixture("gemma2-bf16");
    for args in [
        vec!["generate", "-m", "/no/such/model", "-p", "x"],
        vec!["generate", "-m", &model, "-f", "/no/such/prompt.txt"],
        vec!["generate", "-m", &model, "-p", "x", "-t", "-1"],
        vec!["bench", "-m", "/no/such/model", "-p", "4"],
    ] {
        for value in ["1", "full"] {
            let out = gemma_with(
                &args,
                "",
                &[("RUST_BACKTRACE", value), ("RUST_LIB_BACKTRACE", value)],
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(
                err.starts_with("Error: ") && err.trim_end().lines().count() == 1,
                "{args:?} with RUST_BACKTRACE={value}: {err}"
            );
            assert!(!err.to_lowercase().contains("backtrace"), "{err}");
        }
    }
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

/// `args` fail with exit code 1 and exactly one line on stderr besides a load summary:
/// `Error: ` and a message containing `expected`, at most 400 bytes, without control
/// characters.
fn expect_hostile_file_line(args: &[&str], expected: &str) {
    let out = gemma_within(args, 120);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}:\n{stderr}");
    // A file that loads (a broken forward pass) first prints the load's summary line.
    let err: String = stderr
        .lines()
        .filter(|l| !(l.starts_with("model ") && l.contains(" | arch ")))
        .map(|l| format!("{l}\n"))
        .collect();
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
        expect_hostile_file_line(
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
        expect_hostile_file_line(
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
        expect_hostile_file_line(
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

/// The gemma2-f32 fixture in `nan` with one NaN in layer 1's post-attention norm weight.
fn write_nan_model(nan: &std::path::Path) {
    copy_fixture("gemma2-f32", nan);
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
}

#[test]
fn logits_that_are_not_finite_are_an_error_naming_the_layer() {
    let dir = scratch("nan");
    let nan = dir.join("nan");
    write_nan_model(&nan);
    let model = nan.to_str().unwrap();
    let out = dir.join("logits.safetensors");
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(20),
    )
    .unwrap();
    let text = text.to_str().unwrap();
    for args in [
        vec![
            "--backend",
            "vulkan",
            "perplexity",
            "--model",
            model,
            "--file",
            text,
            "--ctx",
            "32",
        ],
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
        expect_hostile_file_line(
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
        expect_hostile_file_line(
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
        expect_hostile_file_line(
            &["generate", "--model", d.to_str().unwrap(), "--prompt", "hi"],
            "is a FIFO, socket or device, not a regular file",
        );
    }
    let d = dir.join("shard-is-a-directory");
    copy_fixture("gemma2-f32", &d);
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    std::fs::create_dir(d.join("model.safetensors")).unwrap();
    expect_hostile_file_line(
        &["generate", "--model", d.to_str().unwrap(), "--prompt", "hi"],
        "is a directory, not a regular file",
    );
    let fifo = dir.join("model.gguf");
    mkfifo(&fifo);
    for model in [fifo.to_str().unwrap(), "/dev/zero"] {
        expect_hostile_file_line(
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
    expect_hostile_file_line(
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
    expect_hostile_file_line(
        &["generate", "--model", d.to_str().unwrap(), "--prompt", "hi"],
        "invalid type: string",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_chat_on_a_model_without_its_own_template_is_warned_about_once() {
    let dir = fixture("gemma1-bf16");
    let gguf = format!("{dir}.gguf");
    let warned = |out: &std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        err.matches("has no chat template of its own").count()
    };
    // The GGUF copy carries no template (Gemma's turn format stands in); the directory's
    // tokenizer_config.json has one.
    let chat = |m: &str| gemma(&["generate", "--chat", "-p", "hi", "-n", "2", "-m", m]);
    assert_eq!(warned(&chat(&gguf)), 1);
    assert_eq!(warned(&chat(&dir)), 0);
    // Plain generation is no chat: no warning.
    assert_eq!(
        warned(&gemma(&["generate", "-p", "hi", "-n", "2", "-m", &gguf])),
        0
    );
    // The chat says it once, however many turns.
    let out = gemma_with(&["chat", "-m", &gguf, "-n", "2"], "hi\nagain\n/exit\n", &[]);
    assert_eq!(warned(&out), 1);
}

/// A repo's files: (name, bytes).
type RepoFiles = Vec<(String, Vec<u8>)>;

/// Each request a mock hub answered: its path and its Authorization header.
type Requests = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// A Hugging Face hub on localhost serving `repos` (repo, [(file, bytes)]): each repo's file
/// listing and downloads, with the headers the hub client reads. Returns its address and
/// the requests it has answered.
fn mock_hub(repos: Vec<(&'static str, RepoFiles)>) -> (String, Requests) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let address = format!("http://{}", server.server_addr().to_ip().unwrap());
    let served = Requests::default();
    let log = served.clone();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let auth = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .map(|h| h.value.to_string());
            log.lock().unwrap().push((request.url().to_string(), auth));
            let url = request.url().to_string();
            let header = |name: &str, value: &str| {
                tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap()
            };
            let mut response = tiny_http::Response::from_string("not found").with_status_code(404);
            for (repo, files) in &repos {
                if url == format!("/api/models/{repo}/revision/main") {
                    let siblings: Vec<_> = files
                        .iter()
                        .map(|(f, _)| serde_json::json!({ "rfilename": f }))
                        .collect();
                    let json = serde_json::json!({"siblings": siblings, "sha": "c0ffee"});
                    response = tiny_http::Response::from_string(json.to_string());
                }
                for (i, (file, bytes)) in files.iter().enumerate() {
                    if url != format!("/{repo}/resolve/main/{file}") {
                        continue;
                    }
                    let range = request
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("Range"))
                        .map(|h| h.value.to_string())
                        .unwrap_or_default();
                    let (start, end) =
                        match range.strip_prefix("bytes=").and_then(|r| r.split_once('-')) {
                            Some((s, "")) => (s.parse().unwrap(), bytes.len()),
                            Some((s, e)) => (s.parse().unwrap(), e.parse::<usize>().unwrap() + 1),
                            None => (0, bytes.len()),
                        };
                    let total = bytes.len();
                    response = tiny_http::Response::from_data(bytes[start..end].to_vec())
                        .with_status_code(206)
                        .with_header(header(
                            "ETag",
                            &format!("\"blob{i}-{repo}\"").replace('/', "-"),
                        ))
                        .with_header(header("X-Repo-Commit", "c0ffee"))
                        .with_header(header(
                            "Content-Range",
                            &format!("bytes {start}-{}/{total}", end - 1),
                        ));
                }
            }
            let _ = request.respond(response);
        }
    });
    (address, served)
}

/// A mock hub with two repos, and empty caches and home for the program: what the model
/// tests below run against.
struct HubSandbox {
    root: std::path::PathBuf,
    hub: String,
    served: Requests,
    /// The files the repo `acme/tiny-gemma-GGUF` serves as Q4_K_M and as Q8_0.
    q4: Vec<u8>,
    q8: Vec<u8>,
}

impl HubSandbox {
    fn new(name: &str) -> HubSandbox {
        let q4 = std::fs::read(fixture("gemma2-window4096.gguf")).unwrap();
        let q8 = std::fs::read(fixture("gemma1-bf16.gguf")).unwrap();
        let gguf_repo = vec![
            ("README.md".to_string(), b"# tiny".to_vec()),
            ("tiny-gemma-Q8_0.gguf".to_string(), q8.clone()),
            ("tiny-gemma-Q4_K_M.gguf".to_string(), q4.clone()),
            (
                "mmproj-tiny-gemma-F16.gguf".to_string(),
                b"not a model".to_vec(),
            ),
        ];
        let alias_repo = vec![("gemma-3-270m-it-Q4_K_M.gguf".to_string(), q4.clone())];
        let (hub, served) = mock_hub(vec![
            ("acme/tiny-gemma-GGUF", gguf_repo),
            ("unsloth/gemma-3-270m-it-GGUF", alias_repo),
        ]);
        HubSandbox {
            root: scratch(name),
            hub,
            served,
            q4,
            q8,
        }
    }

    /// The program, with the hub and the caches set; `offline`: HF_HUB_OFFLINE.
    fn run(&self, args: &[&str], offline: bool) -> std::process::Output {
        let dir = |d: &str| self.root.join(d).display().to_string();
        let env = [
            ("HF_ENDPOINT", self.hub.clone()),
            ("HF_HUB_CACHE", dir("hub")),
            ("HF_TOKEN", String::new()),
            ("GEMMA_WGPU_CACHE", dir("own")),
            ("HOME", dir("home")),
            ("HF_HOME", dir("home/hf")),
            (
                "HF_HUB_OFFLINE",
                if offline { "1" } else { "0" }.to_string(),
            ),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        gemma_with(args, "", &env)
    }

    /// The path `pull NAME` printed.
    fn pull(&self, name: &str) -> std::path::PathBuf {
        let out = self.run(&["pull", name], false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }

    fn requests(&self) -> usize {
        self.served.lock().unwrap().len()
    }
}

impl Drop for HubSandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn models_are_pulled_by_repo_quantization_or_alias_and_then_run_offline() {
    let hub = HubSandbox::new("pull");
    // Without a quantization, llama.cpp's default (Q4_K_M), never the vision projector; off
    // a terminal, a line per download in place of the progress bar.
    let out = hub.run(&["pull", "acme/tiny-gemma-GGUF"], false);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("downloading acme/tiny-gemma-GGUF/tiny-gemma-Q4_K_M.gguf"),
        "{said}"
    );
    let default = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        default.ends_with("tiny-gemma-Q4_K_M.gguf"),
        "{}",
        default.display()
    );
    assert_eq!(std::fs::read(&default).unwrap(), hub.q4);
    // With one (any case, `hf.co/` allowed), that file.
    let q8 = hub.pull("hf.co/acme/tiny-gemma-GGUF:q8_0");
    assert!(q8.ends_with("tiny-gemma-Q8_0.gguf"));
    assert_eq!(std::fs::read(&q8).unwrap(), hub.q8);
    // An alias for a chat model comes from its repo.
    let alias = hub.pull("gemma-3-270m-it");
    assert!(alias.ends_with("gemma-3-270m-it-Q4_K_M.gguf"));
    // No token anywhere: none sent. A token `huggingface-cli login` saved beside the cache
    // is sent as a bearer token (for gated repos).
    assert!(
        hub.served
            .lock()
            .unwrap()
            .iter()
            .all(|(_, auth)| auth.is_none())
    );
    std::fs::write(hub.root.join("token"), "hf_saved\n").unwrap();
    hub.pull("acme/tiny-gemma-GGUF:Q4_K_M");
    let out = hub.run(&["pull", "acme/tiny-gemma-GGUF:Q5_K_M"], false);
    assert!(!out.status.success());
    let last = hub.served.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.1.as_deref(), Some("Bearer hf_saved"), "{last:?}");
    // A quantization the repo lacks, and a repo the hub lacks: one line each.
    for (name, expected) in [
        (
            "acme/tiny-gemma-GGUF:Q5_K_M",
            "has no Q5_K_M GGUF file (it has: Q4_K_M, Q8_0)",
        ),
        ("acme/missing", "download failed"),
    ] {
        let out = hub.run(&["pull", name], false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expected),
            "{name}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // Once pulled, a model runs without the network.
    let before = hub.requests();
    let args = [
        "generate",
        "-m",
        "acme/tiny-gemma-GGUF:Q8_0",
        "--tokens",
        "2,3,4",
        "-n",
        "2",
    ];
    let out = hub.run(&[&args[..], &["--json"]].concat(), true);
    assert_eq!(generated(&out)["token_ids"].as_array().unwrap().len(), 2);
    assert_eq!(hub.requests(), before, "no request once cached");
    let out = hub.run(&["pull", "acme/tiny-gemma-GGUF:Q5_K_M"], true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("HF_HUB_OFFLINE"));
}

#[test]
fn downloaded_models_are_listed_and_removed() {
    let hub = HubSandbox::new("list");
    let q4 = hub.pull("acme/tiny-gemma-GGUF");
    let q8 = hub.pull("acme/tiny-gemma-GGUF:Q8_0");
    hub.pull("gemma-3-270m-it");
    // list: name, size, the type read from the file, path.
    let out = hub.run(&["list"], true);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    let row = |name: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not in\n{listed}"))
            .to_string()
    };
    assert!(listed.starts_with("NAME"), "{listed}");
    assert!(row("acme/tiny-gemma-GGUF:Q8_0").contains(&q8.display().to_string()));
    assert!(row("acme/tiny-gemma-GGUF:Q4_K_M").contains(" MB "));
    // The type comes from the file's header (the fixture is BF16), not from its name.
    assert!(
        row("unsloth/gemma-3-270m-it-GGUF:Q4_K_M").contains(" BF16 "),
        "{listed}"
    );
    let out = hub.run(&["list", "--available"], true);
    let available = String::from_utf8_lossy(&out.stdout).to_string();
    let it = available
        .lines()
        .find(|l| l.starts_with("gemma-3-270m-it "))
        .unwrap();
    assert!(it.contains("chat") && it.contains(" yes "), "{available}");
    let base = available
        .lines()
        .find(|l| l.starts_with("gemma-3-270m "))
        .unwrap();
    assert!(
        base.contains("base") && base.contains(" no "),
        "{available}"
    );
    // rm deletes the file and its blob, and nothing else.
    let out = hub.run(&["rm", "acme/tiny-gemma-GGUF:Q8_0"], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!q8.exists() && q4.exists());
    let blobs = hub.root.join("hub/models--acme--tiny-gemma-GGUF/blobs");
    // What is left: the Q4_K_M blob and the lock file the hub client keeps beside it.
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 2);
    let out = hub.run(&["list"], true);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("GGUF:Q8_0"));
    let out = hub.run(&["rm", "acme/tiny-gemma-GGUF:Q8_0"], true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is not downloaded"),
        "{err}"
    );
}
