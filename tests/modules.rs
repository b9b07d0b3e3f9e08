//! The library's module graph points one way. Reads every file under src/, collects the
//! top-level modules each one names (`crate::weights::...`, `use crate::{config, Result}`;
//! `gemma_wgpu::...` in the command-line files), and checks every arrow against the allowed
//! ones below. Test code (`#[cfg(test)]` items) is left out: a unit test may hold production
//! code to the specification in `reference`. Needs no GPU.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The command line: main.rs and the files it declares.
const CLI: &str = "cli";

/// Each module and the modules it may name. `error` and `files` are leaves that anything
/// may use; `config` holds plain values (the kernels take its `AttentionShape`).
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("files", &["error"]),
    ("formats", &["error"]),
    ("config", &["error", "files"]),
    ("gpu", &["error"]),
    ("kernels", &["gpu", "formats", "config", "error"]),
    ("weights", &["config", "formats", "files", "error"]),
    ("reference", &["config", "formats", "error"]),
    ("store", &["weights", "files", "error"]),
    (
        "model",
        &[
            "kernels", "weights", "gpu", "config", "formats", "files", "error",
        ],
    ),
    (
        "engine",
        &[
            "model", "kernels", "weights", "store", "gpu", "config", "formats", "files", "error",
        ],
    ),
    (
        "server",
        &[
            "engine", "model", "kernels", "weights", "store", "gpu", "config", "formats", "files",
            "error",
        ],
    ),
    (
        CLI,
        &[
            "server", "engine", "model", "kernels", "weights", "store", "gpu", "config", "formats",
            "files", "error",
        ],
    ),
];

/// Where one module names another.
#[derive(Debug)]
struct Use {
    from: String,
    to: String,
    file: PathBuf,
    line: usize,
}

impl std::fmt::Display for Use {
    /// `src/gpu/pipeline.rs:4: gpu uses kernels`
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let (file, line) = (self.file.display(), self.line);
        write!(f, "src/{file}:{line}: {} uses {}", self.from, self.to)
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under src/ belongs to (`None` for lib.rs).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    match name.as_str() {
        "lib" => None,
        "main" | "bench" | "chat" => Some(CLI.into()),
        _ => Some(name),
    }
}

/// The lines of `text` outside `#[cfg(test)]` items and comments, numbered from 1.
fn production_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = vec![];
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            // Skip the next item: to its matching brace, or to its semicolon.
            let mut depth = 0i32;
            let mut opened = false;
            for (_, l) in lines.by_ref() {
                let code = l.split("//").next().unwrap_or("");
                depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
                opened |= code.contains('{');
                if (opened && depth <= 0) || (!opened && code.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        out.push((i + 1, line));
    }
    out
}

/// The top-level names after each `prefix` on a line: `crate::a::b` gives `a`,
/// `crate::{a, b::c, D}` gives `a`, `b` and `D`.
fn names_after<'a>(line: &'a str, prefix: &str) -> Vec<&'a str> {
    let ident = |s: &'a str| -> &'a str {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    };
    let mut names = vec![];
    for (at, _) in line.match_indices(prefix) {
        // `foo_crate::` is not `crate::`.
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &line[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group (nested groups belong to their item).
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.push(ident(group[start..j].trim_start()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(ident(group[start..j].trim_start()));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.push(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn uses() -> Vec<Use> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    files.sort();
    // lib.rs's own items: its modules, and the error type it re-exports.
    let lib_items: BTreeMap<&str, &str> = ALLOWED
        .iter()
        .map(|(m, _)| (*m, *m))
        .chain([("Error", "error"), ("Result", "error")])
        .collect();
    let mut out = vec![];
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().to_path_buf();
        let Some(from) = module_of(&rel) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        // The command line names the library by its crate name; `crate::` there is main.rs.
        let prefix = if from == CLI {
            "gemma_wgpu::"
        } else {
            "crate::"
        };
        for (line, code) in production_lines(&text) {
            for name in names_after(code, prefix) {
                let to = lib_items.get(name).copied().unwrap_or_else(|| {
                    panic!(
                        "src/{}:{line}: `{prefix}{name}` is not a module this test knows; add \
                         it to ALLOWED",
                        rel.display()
                    )
                });
                if to != from {
                    out.push(Use {
                        from: from.clone(),
                        to: to.into(),
                        file: rel.clone(),
                        line,
                    });
                }
            }
        }
    }
    out
}

#[test]
fn every_arrow_is_allowed() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let uses = uses();
    assert!(
        uses.iter().any(|u| u.from == "model" && u.to == "kernels"),
        "the scan found no arrows: is it reading src/?"
    );
    let bad: Vec<String> = uses
        .iter()
        .filter(|u| {
            !allowed
                .get(u.from.as_str())
                .is_some_and(|to| to.contains(&u.to.as_str()))
        })
        .map(|u| u.to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "arrows against the module order:\n{}",
        bad.join("\n")
    );
}

/// Modules in an order where each comes after everything it reaches, or the cycle found.
fn topological(graph: &BTreeMap<String, BTreeSet<String>>) -> Result<Vec<String>, Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), Vec<String>> {
        if done.contains(n) {
            return Ok(());
        }
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.into());
            return Err(cycle);
        }
        path.push(n.into());
        for m in graph.get(n).into_iter().flatten() {
            visit(m, graph, path, done, order)?;
        }
        path.pop();
        done.insert(n.into());
        order.push(n.into());
        Ok(())
    }
    let (mut done, mut order) = (BTreeSet::new(), vec![]);
    for n in graph.keys() {
        visit(n, graph, &mut vec![], &mut done, &mut order)?;
    }
    Ok(order)
}

#[test]
fn the_module_graph_has_no_cycle() {
    let allowed: BTreeMap<String, BTreeSet<String>> = ALLOWED
        .iter()
        .map(|(m, to)| (m.to_string(), to.iter().map(|t| t.to_string()).collect()))
        .collect();
    if let Err(cycle) = topological(&allowed) {
        panic!("the allowed arrows have a cycle: {}", cycle.join(" -> "));
    }
    let mut actual: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for u in uses() {
        actual.entry(u.from).or_default().insert(u.to);
    }
    if let Err(cycle) = topological(&actual) {
        let uses = uses();
        let at: Vec<String> = cycle
            .windows(2)
            .filter_map(|w| uses.iter().find(|u| u.from == w[0] && u.to == w[1]))
            .map(|u| u.to_string())
            .collect();
        panic!("module cycle {}:\n{}", cycle.join(" -> "), at.join("\n"));
    }
}

#[test]
fn the_scanner_reads_paths_groups_and_skips_test_code() {
    assert_eq!(
        names_after(
            "use crate::{Error, Result, weights::gguf::{A, B}};",
            "crate::"
        ),
        ["Error", "Result", "weights"]
    );
    assert_eq!(
        names_after(
            "let x = crate::kernels::attention::MAX; my_crate::y",
            "crate::"
        ),
        ["kernels"]
    );
    let text = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\nuse crate::c;\n// crate::d\n";
    let kept: Vec<usize> = production_lines(text).iter().map(|l| l.0).collect();
    assert_eq!(kept, [1, 6]);
}
