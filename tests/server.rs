//! The OpenAI-compatible server, driven by the official `openai` Python package and by plain
//! HTTP: streaming and not, concurrent requests, a full queue, a client that disconnects, and
//! each kind of bad request.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Starts `gemma-wgpu serve` on a free port and waits until it answers.
fn start(extra: &[&str]) -> Server {
    let mut args = vec!["--backend", "vulkan", "serve", "--model", "", "--port", "0"];
    let model = fixture("gemma2-bf16");
    args[4] = &model;
    args.extend_from_slice(extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemma-wgpu"))
        .args(&args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(at) = line.find("http://") {
            break line[at..].trim().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Server { child, base }
}

fn post(base: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    match ureq::post(&format!("{base}{path}"))
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(r) => (
            r.status(),
            serde_json::from_reader(r.into_reader()).unwrap(),
        ),
        Err(ureq::Error::Status(code, r)) => {
            (code, serde_json::from_reader(r.into_reader()).unwrap())
        }
        Err(e) => panic!("{path}: {e}"),
    }
}

#[test]
fn the_official_openai_client_works() {
    let server = start(&[]);
    let script = format!(
        "{}/tests/server/openai_client.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("python3")
        .args([&script, &server.base])
        .output()
        .expect("python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'openai'"),
        "the openai package is missing: python3 -m pip install openai (.ci/run installs it)"
    );
    assert!(
        out.status.success(),
        "{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let server = start(&["--ctx", "64"]);
    let long = "word ".repeat(200);
    let cases = [
        (
            "/v1/chat/completions",
            "{not json".to_string(),
            "malformed JSON",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": "hello"}"#.to_string(),
            "invalid request",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}"#
                .to_string(),
            "invalid request",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": []}"#.to_string(),
            "must not be empty",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "  "}]}"#.to_string(),
            "is empty",
        ),
        (
            "/v1/chat/completions",
            format!(r#"{{"messages": [{{"role": "user", "content": "{long}"}}]}}"#),
            "context holds 64",
        ),
        (
            "/v1/completions",
            r#"{"prompt": ""}"#.to_string(),
            "must not be empty",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "hi", "n": 3}"#.to_string(),
            "n = 1",
        ),
    ];
    for (path, body, expected) in cases {
        let (status, v) = post(&server.base, path, &body);
        assert_eq!(status, 400, "{body}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let health = ureq::get(&format!("{}/health", server.base))
        .call()
        .unwrap();
    assert_eq!(health.status(), 200);
    let (status, v) = post(
        &server.base,
        "/v1/completions",
        r#"{"prompt": "Once", "max_tokens": 2}"#,
    );
    assert_eq!(status, 200, "{v}");
}

#[test]
fn concurrent_requests_queue_and_a_full_queue_is_503() {
    let server = start(&["--queue", "2"]);
    let base = server.base.clone();
    // Eight requests at once against one running and two waiting: some get 503, the rest 200.
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let base = base.clone();
            std::thread::spawn(move || {
                post(
                    &base,
                    "/v1/completions",
                    r#"{"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0}"#,
                )
            })
        })
        .collect();
    let results: Vec<(u16, serde_json::Value)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert!(
        ok >= 1 && !busy.is_empty() && ok + busy.len() == 8,
        "{results:?}"
    );
    assert_eq!(busy[0].1["error"]["code"], "queue_full");
    // Every accepted request got its whole answer: 200 tokens, or fewer ending at eos.
    for (_, v) in results.iter().filter(|r| r.0 == 200) {
        let tokens = v["usage"]["completion_tokens"].as_u64().unwrap();
        match v["choices"][0]["finish_reason"].as_str() {
            Some("length") => assert_eq!(tokens, 200, "{v}"),
            Some("stop") => assert!(tokens < 200, "{v}"),
            other => panic!("finish_reason {other:?}"),
        }
    }
}

#[test]
fn a_client_that_disconnects_stops_its_generation() {
    let server = start(&[]);
    // How long 600 tokens take here.
    let t = Instant::now();
    let (status, v) = post(
        &server.base,
        "/v1/completions",
        r#"{"prompt": "Once", "max_tokens": 600, "ignore_eos": true}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(v["usage"]["completion_tokens"], 600, "{v}");
    let full = t.elapsed();
    // Start the same as a stream, read one event, hang up.
    let r = ureq::post(&format!("{}/v1/completions", server.base))
        .send_string(r#"{"prompt": "Once", "max_tokens": 600, "ignore_eos": true, "stream": true}"#)
        .unwrap();
    let mut reader = r.into_reader();
    let mut first = [0u8; 64];
    let n = reader.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("data: "));
    drop(reader);
    // The next request is served long before the abandoned one could have finished.
    let t = Instant::now();
    let (status, _) = post(
        &server.base,
        "/v1/completions",
        r#"{"prompt": "Once", "max_tokens": 2}"#,
    );
    assert_eq!(status, 200);
    let next = t.elapsed();
    assert!(
        next < full / 2,
        "waited {next:?}; a full generation takes {full:?}"
    );
}
