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
