//! GPU errors that surface away from the call that caused them (an allocation out of memory,
//! an error outside any error scope, a lost device): recorded here instead of wgpu's default
//! panic, and returned as an [`Error`] at the next check.

use crate::Error;
use std::sync::{Arc, Mutex};

/// The first GPU fault since the last check.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// A buffer that did not fit: its label and size in bytes (0 when wgpu did not say).
    OutOfMemory { label: String, bytes: u64 },
    /// Any other error, or the device lost.
    Other(String),
}

impl Fault {
    /// Classifies an error wgpu reports to the uncaptured-error handler.
    pub fn from_wgpu(e: &wgpu::Error) -> Fault {
        match e {
            wgpu::Error::OutOfMemory { source } => Fault::OutOfMemory {
                label: format!("a GPU resource ({source})"),
                bytes: 0,
            },
            other => Fault::Other(other.to_string()),
        }
    }

    /// The library error; `hint` says, from the label of what did not fit, which setting would
    /// need less memory.
    pub fn into_error(self, hint: impl FnOnce(&str) -> String) -> Error {
        match self {
            Fault::OutOfMemory { label, bytes } => {
                let size = if bytes > 0 {
                    format!(" ({})", human_bytes(bytes))
                } else {
                    String::new()
                };
                let hint = hint(&label);
                Error::OutOfMemory {
                    what: format!("`{label}`{size}"),
                    hint,
                }
            }
            Fault::Other(message) => Error::Device(message),
        }
    }
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

/// Where faults wait for the next check; shared with wgpu's callbacks.
#[derive(Clone, Debug, Default)]
pub struct Faults(Arc<Mutex<Option<Fault>>>);

impl Faults {
    /// Keeps `fault` unless an earlier one waits: the first is the cause, later ones follow
    /// from it (an out-of-memory buffer is invalid wherever it is used next).
    pub fn record(&self, fault: Fault) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(fault);
    }

    /// The waiting fault, if any, leaving none.
    pub fn take(&self) -> Option<Fault> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_names_what_and_how_to_need_less() {
        let oom = wgpu::Error::OutOfMemory {
            source: Box::new(std::io::Error::other("Not enough memory left.")),
        };
        let faults = Faults::default();
        faults.record(Fault::from_wgpu(&oom));
        faults.record(Fault::Other("a later validation error".into()));
        let fault = faults.take().expect("recorded");
        assert!(faults.take().is_none(), "taken once");
        let e = fault.into_error(|_| "use a smaller --ctx".into());
        let text = e.to_string();
        assert!(matches!(e, Error::OutOfMemory { .. }), "{e:?}");
        assert!(
            text.starts_with("the adapter ran out of memory allocating `a GPU resource")
                && text.ends_with("; use a smaller --ctx"),
            "{text}"
        );
        let e = Fault::OutOfMemory {
            label: "L03.kv.k".into(),
            bytes: 3 << 20,
        }
        .into_error(|label| format!("{label} grows with --ctx"));
        assert_eq!(
            e.to_string(),
            "the adapter ran out of memory allocating `L03.kv.k` (3.0 MiB); L03.kv.k grows with --ctx"
        );
        let lost = Fault::Other("the device was lost".into()).into_error(|_| String::new());
        assert_eq!(lost.to_string(), "GPU error: the device was lost");
    }
}
