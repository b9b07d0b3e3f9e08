//! Opening the files a model names: regular files only (a FIFO or a device would block or
//! never end), text files of bounded size, and shard names that stay inside their directory.

use crate::error::printable;
use crate::{Error, Result};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Largest JSON side file read whole (config.json, generation_config.json,
/// tokenizer_config.json, model.safetensors.index.json, refs/main): real ones are a few KiB.
pub const MAX_JSON_BYTES: u64 = 16 << 20;
/// Largest tokenizer.json read whole (Gemma's is 33 MiB).
pub const MAX_TOKENIZER_BYTES: u64 = 1 << 30;

fn io(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn not_regular(path: &Path, meta: &std::fs::Metadata) -> Error {
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        "a FIFO, socket or device"
    };
    io(path, format!("is {kind}, not a regular file"))
}

/// Opens `path` for reading if it is a regular file (symbolic links followed). The type is
/// checked before opening and again on the open file, and the open itself cannot block, so a
/// FIFO swapped in between is refused too.
pub fn open_regular(path: &Path) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| io(path, e))?;
    let meta = file.metadata().map_err(|e| io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    Ok(file)
}

/// The text of the regular file `path`, refused past `max` bytes.
pub fn read_text(path: &Path, max: u64) -> Result<String> {
    let file = open_regular(path)?;
    let len = file.metadata().map_err(|e| io(path, e))?.len();
    if len > max {
        return Err(io(
            path,
            format!("{len} bytes, more than the {max} bytes such a file may have"),
        ));
    }
    let mut text = String::new();
    // `take`: the file may grow after the check.
    file.take(max)
        .read_to_string(&mut text)
        .map_err(|e| io(path, e))?;
    Ok(text)
}

/// Like [`read_text`], but `Ok(None)` when `path` does not exist.
pub fn read_text_if_present(path: &Path, max: u64) -> Result<Option<String>> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_text(path, max).map(Some),
    }
}

/// Checks a file name read from a file (a shard of `model.safetensors.index.json`, a
/// revision in a hub cache's `refs/main`) before it is joined to a directory or requested
/// from a server: one plain component, so it names a file inside that directory and
/// nothing else.
pub fn check_plain_name(name: &str, what: &str) -> std::result::Result<(), String> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 255
        || name
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '\0' | '#' | '?' | ':') || c.is_control());
    if bad {
        return Err(format!(
            "{what} `{}` is not a plain file name (no directories, `..`, `#`, `?` or control \
             characters)",
            printable(name)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_pass() {
        for good in [
            "model.safetensors",
            "model-00001-of-00010.safetensors",
            "a..b",
            "0123abcd",
        ] {
            assert!(check_plain_name(good, "shard").is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../model.safetensors",
            "/etc/passwd",
            "sub/model.safetensors",
            "..\\model.safetensors",
            "model.safetensors#x",
            "model.safetensors?download=1",
            "c:model",
            "a\0b",
            "a\u{1b}[2Jb",
        ] {
            let e = check_plain_name(bad, "shard").unwrap_err();
            assert!(!e.contains('\u{1b}') && !e.contains('\0'), "{e}");
        }
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let e = open_regular(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_text(Path::new("/"), 10).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let dir = std::env::temp_dir().join(format!("gemma-wgpu-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("config.json");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.map(|s| s.success()).unwrap_or(false) {
            let e = read_text(&fifo, 10).unwrap_err().to_string();
            assert!(e.contains("FIFO"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
