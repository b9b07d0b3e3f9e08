//! The OpenAI-compatible server, driven by the official `openai` Python package and by plain
//! HTTP: streaming and not, concurrent requests, a full queue, a client that disconnects, and
//! each kind of bad request; the API key, JSON bodies, Host and Origin checks, CORS, slow and
//! idle clients, the connection cap, graceful shutdown and `/metrics`. Every test talks to
//! 127.0.0.1 only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    base: String,
    /// What the server wrote to stderr after its start line.
    log: Arc<Mutex<String>>,
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
    start_with_env(extra, &[])
}

/// `start`, with environment variables set for the server.
fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut args = vec!["--backend", "vulkan", "serve", "--model", "", "--port", "0"];
    let model = fixture("gemma2-bf16");
    args[4] = &model;
    args.extend_from_slice(extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemma-wgpu"))
        .args(&args)
        .envs(env.iter().copied())
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
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    Server { child, base, log }
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
    // scripts/test.sh installs the client into its own virtual environment and names it here.
    let python = std::env::var("GEMMA_WGPU_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([&script, &server.base])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'openai'"),
        "the openai package is missing for {python}: run scripts/test.sh (it installs it), or \
         python3 -m pip install openai==3.57.0"
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
        (
            "/v1/completions",
            r#"{"prompt": ["hi", "there"]}"#.to_string(),
            "one prompt per request",
        ),
        (
            "/v1/completions",
            r#"{"prompt": []}"#.to_string(),
            "must not be empty",
        ),
        (
            "/v1/completions",
            r#"{"prompt": [2, -1]}"#.to_string(),
            "prompt[1]: -1 is not a token id",
        ),
        (
            "/v1/completions",
            r#"{"prompt": [[2, 4294967296]]}"#.to_string(),
            "prompt[1]: 4294967296 is not a token id",
        ),
        (
            "/v1/completions",
            r#"{"prompt": [2, 4294967295]}"#.to_string(),
            "token id 4294967295 is outside the vocabulary",
        ),
        (
            "/v1/completions",
            r#"{"prompt": {"text": "hi"}}"#.to_string(),
            "prompt must be a string, a list of token ids",
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

/// A prompt of token ids (alone or as the one entry of a list) is taken as it is: the ids
/// `tokenize` gives for a text (`<bos>` included) continue as that text does; /tokenize and
/// /detokenize turn text into those ids and back.
#[test]
fn completions_take_prompts_of_token_ids_from_tokenize() {
    let model = fixture("gemma2-bf16");
    let out = Command::new(env!("CARGO_BIN_EXE_gemma-wgpu"))
        .args([
            "tokenize",
            "--model",
            &model,
            "--prompt",
            "Once upon a time",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let ids = String::from_utf8(out.stdout).unwrap();
    let ids = ids.trim();
    assert!(ids.starts_with("[2, ") && ids.ends_with(']'), "{ids}");
    let server = start(&[]);
    let complete = |prompt: &str| {
        let body = format!(r#"{{"prompt": {prompt}, "max_tokens": 6, "temperature": 0}}"#);
        let (status, v) = post(&server.base, "/v1/completions", &body);
        assert_eq!(status, 200, "{body}: {v}");
        (
            v["choices"][0]["text"].clone(),
            v["usage"]["prompt_tokens"].clone(),
        )
    };
    let text = complete(r#""Once upon a time""#);
    assert!(text.0.as_str().is_some_and(|t| !t.is_empty()), "{text:?}");
    assert_eq!(complete(ids), text);
    assert_eq!(complete(&format!("[{ids}]")), text);
    // llama-server's /tokenize gives the same ids (`<bos>` with add_special), and /detokenize
    // the text back.
    let ids: serde_json::Value = serde_json::from_str(ids).unwrap();
    let (status, v) = post(
        &server.base,
        "/tokenize",
        r#"{"content": "Once upon a time", "add_special": true}"#,
    );
    assert_eq!((status, &v["tokens"]), (200, &ids), "{v}");
    let (status, v) = post(
        &server.base,
        "/tokenize",
        r#"{"content": "Once upon a time"}"#,
    );
    let plain = v["tokens"].clone();
    assert_eq!(
        (status, plain.as_array()),
        (200, Some(&ids.as_array().unwrap()[1..].to_vec()))
    );
    let (status, v) = post(
        &server.base,
        "/detokenize",
        &format!(r#"{{"tokens": {plain}}}"#),
    );
    assert_eq!(
        (status, v["content"].as_str()),
        (200, Some("Once upon a time")),
        "{v}"
    );
    // Control tokens written in the content are parsed, and spelled out again.
    // (JSON text: the newline escaped.)
    let turn = r"<start_of_turn>user\nHi<end_of_turn>";
    let (_, v) = post(
        &server.base,
        "/tokenize",
        &format!(r#"{{"content": "{turn}"}}"#),
    );
    let (_, back) = post(
        &server.base,
        "/detokenize",
        &format!(r#"{{"tokens": {}}}"#, v["tokens"]),
    );
    assert_eq!(
        back["content"], "<start_of_turn>user\nHi<end_of_turn>",
        "{v} {back}"
    );
    let first = &v["tokens"][0];
    let (_, one) = post(
        &server.base,
        "/detokenize",
        &format!(r#"{{"tokens": [{first}]}}"#),
    );
    assert_eq!(one["content"], "<start_of_turn>", "{v}");
    for (path, body, expected) in [
        ("/tokenize", r#"{"content": 5}"#, "invalid request"),
        (
            "/detokenize",
            r#"{"tokens": [2, 4294967295]}"#,
            "outside the vocabulary",
        ),
        ("/detokenize", r#"{"tokens": [-1]}"#, "invalid request"),
    ] {
        let (status, v) = post(&server.base, path, body);
        assert_eq!(status, 400, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(expected),
            "{v}"
        );
    }
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

/// A reply: status, headers (lowercase names) and body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// Asserts an OpenAI-style error with this status and code.
    fn expect_error(&self, status: u16, code: &str) -> &Reply {
        assert_eq!(self.status, status, "{}", self.body);
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert!(v["error"]["type"].is_string(), "{v}");
        self
    }
}

fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut r = ureq::request(method, &format!("{base}{path}"));
    for (k, v) in headers {
        r = r.set(k, v);
    }
    let sent = match body {
        Some(b) => r.send_string(b),
        None => r.call(),
    };
    let response = match sent {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let headers = response
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = response.header(&n).unwrap_or_default().to_string();
            (n.to_ascii_lowercase(), v)
        })
        .collect();
    let status = response.status();
    let body = response.into_string().unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// `host:port` of a base URL.
fn address(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (or `limit` passes); returns what came.
fn read_to_close(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[test]
fn an_api_key_guards_every_endpoint_but_health() {
    let server = start_with_env(&[], &[("GEMMA_WGPU_API_KEY", "s3cret-key")]);
    let b = server.base.as_str();
    let good = ("Authorization", "Bearer s3cret-key");
    let completion = r#"{"prompt": "Once", "max_tokens": 2}"#;
    for (method, path, body) in [
        ("GET", "/v1/models", None),
        ("GET", "/metrics", None),
        ("POST", "/v1/completions", Some(completion)),
        ("GET", "/no/such/path", None),
    ] {
        let missing = request(b, method, path, &[JSON], body);
        missing.expect_error(401, "invalid_api_key");
        assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
        assert!(
            missing.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Bearer")
        );
        let wrong = request(
            b,
            method,
            path,
            &[JSON, ("Authorization", "Bearer s3cret-kez")],
            body,
        );
        wrong.expect_error(401, "invalid_api_key");
        let short = request(
            b,
            method,
            path,
            &[JSON, ("Authorization", "Bearer s3cret")],
            body,
        );
        short.expect_error(401, "invalid_api_key");
        let right = request(b, method, path, &[JSON, good], body);
        let expected = if path == "/no/such/path" { 404 } else { 200 };
        assert_eq!(right.status, expected, "{path}: {}", right.body);
    }
    // Load balancers probe /health without credentials.
    assert_eq!(request(b, "GET", "/health", &[], None).status, 200);
    // The flag works as the variable does.
    drop(server);
    let server = start(&["--api-key", "other-key"]);
    let r = request(
        &server.base,
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer other-key")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    request(&server.base, "GET", "/v1/models", &[good], None).expect_error(401, "invalid_api_key");
}

#[test]
fn posts_must_be_json_and_foreign_hosts_and_origins_are_refused() {
    let server = start(&["--allowed-host", "models.example"]);
    let b = server.base.as_str();
    let port = b.rsplit(':').next().unwrap();
    let body = r#"{"prompt": "Once", "max_tokens": 1}"#;
    // A cross-site form post carries one of these types; it must not generate.
    for kind in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        request(
            b,
            "POST",
            "/v1/completions",
            &[("Content-Type", kind)],
            Some(body),
        )
        .expect_error(415, "unsupported_media_type");
    }
    let r = request(
        b,
        "POST",
        "/v1/completions",
        &[("Content-Type", "Application/JSON; charset=utf-8")],
        Some(body),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // DNS rebinding: a foreign name resolving to this machine.
    let evil = format!("attacker.example:{port}");
    request(b, "GET", "/v1/models", &[("Host", &evil)], None).expect_error(403, "host_not_allowed");
    request(
        b,
        "POST",
        "/v1/completions",
        &[JSON, ("Host", &evil)],
        Some(body),
    )
    .expect_error(403, "host_not_allowed");
    for host in [
        format!("models.example:{port}"),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let r = request(b, "GET", "/v1/models", &[("Host", &host)], None);
        assert_eq!(r.status, 200, "{host}: {}", r.body);
    }
    // Web pages (they send Origin) are refused, and no CORS header is ever sent.
    let page = ("Origin", "https://some.site");
    let r = request(b, "POST", "/v1/completions", &[JSON, page], Some(body));
    r.expect_error(403, "origin_not_allowed");
    assert_eq!(r.header("access-control-allow-origin"), None);
    let preflight = request(
        b,
        "OPTIONS",
        "/v1/completions",
        &[page, ("Access-Control-Request-Method", "POST")],
        None,
    );
    assert_eq!(preflight.status, 403);
    assert_eq!(preflight.header("access-control-allow-origin"), None);
    let plain = request(b, "GET", "/v1/models", &[], None);
    assert_eq!(plain.status, 200);
    assert!(
        plain
            .headers
            .iter()
            .all(|(n, _)| !n.starts_with("access-control-")),
        "{:?}",
        plain.headers
    );
}

#[test]
fn cors_headers_go_only_to_the_configured_origin() {
    let server = start(&["--cors-origin", "https://app.example"]);
    let b = server.base.as_str();
    let app = ("Origin", "https://app.example");
    let r = request(b, "GET", "/v1/models", &[app], None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let preflight = request(
        b,
        "OPTIONS",
        "/v1/chat/completions",
        &[
            app,
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        None,
    );
    assert_eq!(preflight.status, 204, "{}", preflight.body);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        preflight
            .header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    let r = request(
        b,
        "POST",
        "/v1/completions",
        &[JSON, app],
        Some(r#"{"prompt": "Once", "max_tokens": 1}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let other = request(
        b,
        "GET",
        "/v1/models",
        &[("Origin", "https://other.example")],
        None,
    );
    other.expect_error(403, "origin_not_allowed");
    assert_eq!(other.header("access-control-allow-origin"), None);
}

#[test]
fn slow_and_idle_clients_are_cut_off_and_connections_are_capped() {
    let server = start(&[
        "--header-timeout",
        "2",
        "--body-timeout",
        "1",
        "--idle-timeout",
        "2",
        "--max-connections",
        "4",
    ]);
    let addr = address(&server.base);
    let connect = || TcpStream::connect(&addr).unwrap();
    // Headers that never end (slowloris): answered 408 after the header timeout, and closed.
    let mut slow = connect();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")
        .unwrap();
    let t = Instant::now();
    let (got, closed) = read_to_close(&mut slow, Duration::from_secs(10));
    let waited = t.elapsed();
    assert!(
        closed && got.starts_with("HTTP/1.1 408") && got.contains("request headers"),
        "{got}"
    );
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    // A body that never ends: 408 with an OpenAI-style body.
    let mut slow = connect();
    slow.write_all(
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"prompt\": ",
    )
    .unwrap();
    let (got, closed) = read_to_close(&mut slow, Duration::from_secs(10));
    assert!(closed && got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("\"code\":\"request_timeout\""), "{got}");
    // A kept-alive connection left idle: closed after the idle timeout.
    let mut idle = connect();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = [0u8; 512];
    let n = idle.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    let (_, closed) = read_to_close(&mut idle, Duration::from_secs(10));
    assert!(
        closed && t.elapsed() > Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    // Four connections that say nothing hold every slot: the next twenty are answered 503 and
    // closed at once instead of piling up.
    let held: Vec<TcpStream> = (0..4).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..20 {
        let mut extra = connect();
        let _ = extra.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let (got, closed) = read_to_close(&mut extra, Duration::from_secs(5));
        assert!(closed, "an extra connection stayed open");
        assert!(got.starts_with("HTTP/1.1 503"), "{got}");
        assert!(got.contains("\"code\":\"too_many_connections\""), "{got}");
    }
    // Once the silent ones time out, the server answers again.
    std::thread::sleep(Duration::from_millis(2500));
    let r = request(&server.base, "GET", "/health", &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    drop(held);
}

#[test]
fn sigterm_ends_streams_and_queued_requests_with_errors_and_exits_0() {
    let mut server = start(&[]);
    let base = server.base.clone();
    let r = ureq::post(&format!("{base}/v1/completions"))
        .set("Content-Type", "application/json")
        .send_string(
            r#"{"prompt": "Once", "max_tokens": 4000, "ignore_eos": true, "stream": true}"#,
        )
        .unwrap();
    let mut stream = BufReader::new(r.into_reader());
    let mut line = String::new();
    stream.read_line(&mut line).unwrap();
    assert!(line.starts_with("data: "), "{line}");
    // A request queued behind the stream.
    let queued = std::thread::spawn(move || {
        post(
            &base,
            "/v1/completions",
            r#"{"prompt": "Hi", "max_tokens": 4}"#,
        )
    });
    let t = Instant::now();
    while !request(&server.base, "GET", "/metrics", &[], None)
        .body
        .contains("gemma_wgpu_queue_depth 1")
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the request was never queued"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    let events: Vec<&str> = rest.lines().filter(|l| l.starts_with("data: ")).collect();
    let n = events.len();
    assert!(n >= 2, "{rest}");
    assert!(
        events[n - 2].contains("\"code\":\"shutting_down\""),
        "{rest}"
    );
    assert_eq!(events[n - 1], "data: [DONE]");
    let (status, v) = queued.join().unwrap();
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "shutting_down");
    let t = Instant::now();
    let exit = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the server did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}\n{}", server.log.lock().unwrap());
    assert!(server.log.lock().unwrap().contains("shutting down"));
}

/// The value of an unlabelled sample in a metrics text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

#[test]
fn metrics_and_log_lines_count_requests_tokens_and_latency() {
    let server = start(&[]);
    let b = server.base.as_str();
    let (status, v) = post(
        b,
        "/v1/completions",
        r#"{"prompt": "Once upon a time", "max_tokens": 6, "ignore_eos": true, "temperature": 0}"#,
    );
    assert_eq!(status, 200, "{v}");
    let prompt = v["usage"]["prompt_tokens"].as_f64().unwrap();
    let generated = v["usage"]["completion_tokens"].as_f64().unwrap();
    assert_eq!(generated, 6.0);
    assert_eq!(request(b, "GET", "/no/such/path", &[], None).status, 404);
    let m = request(b, "GET", "/metrics", &[], None);
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = &m.body;
    for line in [
        "gemma_wgpu_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 1",
        "gemma_wgpu_requests_total{endpoint=\"other\",status=\"404\"} 1",
        "# TYPE gemma_wgpu_time_to_first_token_seconds histogram",
        "# TYPE gemma_wgpu_time_per_output_token_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "`{line}` missing:\n{text}");
    }
    assert_eq!(sample(text, "gemma_wgpu_prompt_tokens_total"), prompt);
    assert_eq!(sample(text, "gemma_wgpu_generated_tokens_total"), generated);
    assert_eq!(sample(text, "gemma_wgpu_queue_depth"), 0.0);
    assert_eq!(sample(text, "gemma_wgpu_requests_running"), 0.0);
    assert_eq!(
        sample(text, "gemma_wgpu_time_to_first_token_seconds_count"),
        1.0
    );
    assert_eq!(
        sample(text, "gemma_wgpu_time_per_output_token_seconds_count"),
        1.0
    );
    assert!(sample(text, "gemma_wgpu_time_to_first_token_seconds_sum") > 0.0);
    // One line per request on stderr: id, path, status, tokens, speed, duration.
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log.lock().unwrap().clone();
    let line = log
        .lines()
        .find(|l| l.contains("POST /v1/completions 200"))
        .unwrap_or_else(|| panic!("no log line:\n{log}"));
    assert!(
        line.starts_with('[')
            && line.contains(&format!("prompt {prompt} tokens, generated {generated}, "))
            && line.contains(" tok/s | ")
            && line.ends_with(" s"),
        "{line}"
    );
    assert!(log.contains("GET /no/such/path 404"), "{log}");
}

#[test]
fn wrong_paths_methods_sizes_and_settings_get_openai_errors() {
    let server = start(&["--max-body-bytes", "2000", "--max-tokens-limit", "16"]);
    let b = server.base.as_str();
    let r = request(b, "GET", "/v1/nope", &[], None);
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["error"]["type"],
        "invalid_request_error",
        "{}",
        r.body
    );
    let r = request(b, "GET", "/v1/chat/completions", &[], None);
    r.expect_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = request(b, "POST", "/v1/models", &[JSON], Some("{}"));
    r.expect_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET"));
    let long = format!(r#"{{"prompt": "{}"}}"#, "word ".repeat(600));
    let r = request(b, "POST", "/v1/completions", &[JSON], Some(&long));
    r.expect_error(413, "request_too_large");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2000 bytes")
    );
    // The same without a length up front (chunked): cut off at the limit.
    let mut s = TcpStream::connect(address(b)).unwrap();
    let mut raw = String::from(
        "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
    );
    for piece in long.as_bytes().chunks(500) {
        raw.push_str(&format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            String::from_utf8_lossy(piece)
        ));
    }
    raw.push_str("0\r\n\r\n");
    s.write_all(raw.as_bytes()).unwrap();
    let (got, _) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(
        got.starts_with("HTTP/1.1 413") && got.contains("request_too_large"),
        "{got}"
    );
    // Settings: the server's max_tokens ceiling, and the sampling ranges shared with the CLI.
    for (body, param, expected) in [
        (
            r#"{"prompt": "Hi", "max_tokens": 17}"#,
            "max_tokens",
            "between 0 and 16 (this server's limit)",
        ),
        (
            r#"{"prompt": "Hi", "max_completion_tokens": 99}"#,
            "max_completion_tokens",
            "not 99",
        ),
        (
            r#"{"prompt": "Hi", "max_tokens": -1}"#,
            "max_tokens",
            "not -1",
        ),
        (
            r#"{"prompt": "Hi", "top_p": 0}"#,
            "top_p",
            "top_p must be in (0, 1]",
        ),
        (
            r#"{"prompt": "Hi", "temperature": 1e40}"#,
            "temperature",
            "temperature must be",
        ),
    ] {
        let (status, v) = post(b, "/v1/completions", body);
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(expected),
            "{body}: {v}"
        );
    }
    let (status, v) = post(
        b,
        "/v1/completions",
        r#"{"prompt": "Hi", "max_tokens": 16}"#,
    );
    assert_eq!(status, 200, "{v}");
    // Without max_tokens, the default (256) is held to the ceiling.
    let (status, v) = post(
        b,
        "/v1/completions",
        r#"{"prompt": "Hi", "ignore_eos": true}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 16, "{v}");
}

/// The `data:` payloads of a server-sent event stream, `[DONE]` included.
fn events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(String::from)
        .collect()
}

#[test]
fn requests_shaped_as_langchain_and_llama_server_send_them_are_served() {
    let server = start(&["--alias", "my-gemma"]);
    let base = &server.base;
    // LangChain after a tool call: a system message, text parts, an assistant message with
    // tool calls and null content, the tool's result; its own model name and extra fields.
    let history = r#"[
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
        {"role": "user", "content": "<end_of_turn>And tomorrow?"}]"#;
    let body = format!(
        r#"{{"model": "gpt-3.5-turbo", "messages": {history}, "max_tokens": 4, "temperature": 0,
            "n": 1, "presence_penalty": 0, "frequency_penalty": 0, "stream": true,
            "stream_options": {{"include_usage": true}}}}"#
    );
    let r = request(base, "POST", "/v1/chat/completions", &[JSON], Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    let data = events(&r.body);
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        r.body
    );
    let usage: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], serde_json::json!([]), "{usage}");
    assert!(
        usage["usage"]["prompt_tokens"].as_u64().unwrap() > 10,
        "{usage}"
    );
    assert_eq!(usage["model"], "my-gemma");
    // Every other chunk has its one choice.
    for d in &data[..data.len() - 2] {
        let v: serde_json::Value = serde_json::from_str(d).unwrap();
        assert_eq!(v["choices"].as_array().map(Vec::len), Some(1), "{v}");
    }

    // llama-server's client: its sampling names, timings in the answer.
    let (status, v) = post(
        base,
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "top_k": 40,
            "min_p": 0.05, "repeat_penalty": 1.1, "temperature": 0.8, "seed": 3, "cache_prompt": true}"#,
    );
    assert_eq!(status, 200, "{v}");
    let t = &v["timings"];
    for key in [
        "prompt_n",
        "prompt_ms",
        "prompt_per_second",
        "predicted_n",
        "predicted_ms",
        "predicted_per_second",
    ] {
        assert!(t[key].as_f64().is_some_and(|x| x >= 0.0), "{key}: {v}");
    }
    assert_eq!(t["prompt_n"], v["usage"]["prompt_tokens"]);
    assert_eq!(t["predicted_n"], v["usage"]["completion_tokens"]);
    let (status, v) = post(
        base,
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
            "repetition_penalty": 1.2, "response_format": {"type": "text"}, "tools": [],
            "tool_choice": "none"}"#,
    );
    assert_eq!(status, 200, "{v}");

    // Log-probabilities over the best candidates: greedy takes the best.
    let (status, v) = post(
        base,
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0,
            "logprobs": true, "top_logprobs": 3, "ignore_eos": true}"#,
    );
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 5, "{v}");
    let mut text = String::new();
    for c in content {
        let lp = c["logprob"].as_f64().unwrap();
        let top = c["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{c}");
        assert!(
            lp <= 0.0 && (top[0]["logprob"].as_f64().unwrap() - lp).abs() < 1e-6,
            "{c}"
        );
        assert_eq!(top[0]["token"], c["token"]);
        assert!(
            top.windows(2)
                .all(|w| w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64())
        );
        text.push_str(c["token"].as_str().unwrap());
    }
    assert_eq!(
        text,
        v["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let (status, v) = post(
        base,
        "/v1/completions",
        r#"{"prompt": "Once upon", "max_tokens": 3, "temperature": 0, "logprobs": 2, "ignore_eos": true}"#,
    );
    assert_eq!(status, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(
        lp["top_logprobs"][0].as_object().map(|o| o.len()),
        Some(2),
        "{v}"
    );
    assert_eq!(lp["text_offset"][0], 0);

    // What the server cannot do yet is refused, not ignored.
    for (body, param) in [
        (
            r#"{"messages": [{"role": "user", "content": "Hi"}], "tools": [{"type": "function",
                "function": {"name": "weather", "parameters": {}}}]}"#,
            "tools",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "Hi"}], "tool_choice": "required"}"#,
            "tool_choice",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "json_object"}}"#,
            "response_format",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "Hi"}], "logprobs": true, "top_logprobs": 21}"#,
            "top_logprobs",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "Hi"}], "top_k": -1}"#,
            "top_k",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "Hi"}], "min_p": 2}"#,
            "min_p",
        ),
    ] {
        let (status, v) = post(base, "/v1/chat/completions", body);
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{v}");
        assert!(
            !v["error"]["message"].as_str().unwrap().contains("internal"),
            "{v}"
        );
    }

    // The alias is the model's id.
    let r = request(base, "GET", "/v1/models", &[], None);
    assert!(r.body.contains(r#""id":"my-gemma""#), "{}", r.body);
    let r = request(base, "GET", "/v1/models/my-gemma", &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (v["id"].as_str(), v["object"].as_str()),
        (Some("my-gemma"), Some("model"))
    );
    let r = request(base, "GET", "/v1/models/gpt-4", &[], None);
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("model_not_found"), "{}", r.body);
}
