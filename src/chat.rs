//! `gemma-wgpu chat`: a multi-turn conversation in the terminal.
//!
//! The whole conversation is rendered with the model's chat template each turn; the cache
//! keeps what it already holds, so a turn prefills only its new tokens. In a terminal, lines
//! are edited and recalled with rustyline (history in the cache directory). `/help` lists the
//! commands; other `/words` are answered here, never sent to the model. `"""` opens and closes
//! a message of several lines. Ctrl-C stops the reply being written; at the prompt it says how
//! to leave, and a second one quits. When the context fills up, the oldest turns are dropped
//! (the cache is then rebuilt).

use crate::{LoadArgs, SamplingArgs, load_engine, warn_if_base_model};
use anyhow::Result;
use clap::Args;
use gemma_wgpu::engine::chat::{Conversation, TurnNotes};
use gemma_wgpu::engine::{Engine, GenerateOptions, Generation, SamplingDefaults, StopReason};
use gemma_wgpu::gpu::GpuOptions;
use gemma_wgpu::model::ModelOptions;
use gemma_wgpu::store;
use rustyline::error::ReadlineError;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Longest reply in tokens.
    #[arg(
        short = 'n',
        long,
        default_value_t = 512,
        allow_negative_numbers = true
    )]
    pub max_tokens: i64,
    /// Instructions for the whole conversation, kept across /reset (they open the first turn:
    /// Gemma has no system role).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
}

const HELP: &str = "\
/help        this list (also /?)
/reset       start a new conversation (also /clear)
/exit        quit (also /bye, /quit, Ctrl-D)
\"\"\"          open a message of several lines; a line ending in \"\"\" closes it
Ctrl-C       stop the reply being written; at the prompt, twice quits";

/// What the user typed at the prompt.
enum Entry {
    Line(String),
    /// Ctrl-C at the prompt.
    Interrupted,
    End,
}

/// Where lines come from: a line editor in a terminal, plain lines from a pipe.
enum Input {
    Editor {
        editor: Box<rustyline::DefaultEditor>,
        history: Option<PathBuf>,
    },
    Piped(std::io::StdinLock<'static>),
}

/// The chat's history file: `chat_history` in the cache folder ([`store::cache_dir`]).
fn history_path() -> Option<PathBuf> {
    let dir = store::cache_dir();
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("chat_history"))
}

impl Input {
    fn new() -> Input {
        if std::io::stdin().is_terminal()
            && let Ok(mut editor) = rustyline::DefaultEditor::new()
        {
            let history = history_path();
            if let Some(h) = &history {
                // A first run has no history yet.
                let _ = editor.load_history(h);
            }
            return Input::Editor {
                editor: Box::new(editor),
                history,
            };
        }
        Input::Piped(std::io::stdin().lock())
    }

    /// One line; a piped prompt goes to stderr.
    fn read(&mut self, prompt: &str) -> Result<Entry> {
        match self {
            Input::Editor { editor, .. } => match editor.readline(prompt) {
                Ok(line) => Ok(Entry::Line(line)),
                Err(ReadlineError::Interrupted) => Ok(Entry::Interrupted),
                Err(ReadlineError::Eof) => Ok(Entry::End),
                Err(e) => Err(e.into()),
            },
            Input::Piped(stdin) => {
                // On stderr: stdout holds only the replies, for whoever reads the pipe.
                let mut stderr = std::io::stderr();
                write!(stderr, "{prompt}")?;
                stderr.flush()?;
                let mut line = String::new();
                if stdin.read_line(&mut line)? == 0 {
                    return Ok(Entry::End);
                }
                // The piped line is not echoed: end the prompt's line here.
                writeln!(stderr)?;
                Ok(Entry::Line(line.trim_end_matches(['\r', '\n']).to_string()))
            }
        }
    }

    /// A message, several lines long when it opens with `"""`.
    fn message(&mut self) -> Result<Entry> {
        let first = match self.read("> ")? {
            Entry::Line(l) => l,
            other => return Ok(other),
        };
        let Some(rest) = first.trim_start().strip_prefix("\"\"\"") else {
            self.remember(&first);
            return Ok(Entry::Line(first));
        };
        let mut text = String::new();
        let mut line = rest.to_string();
        loop {
            if let Some(last) = line.trim_end().strip_suffix("\"\"\"") {
                text.push_str(last);
                break;
            }
            text.push_str(&line);
            text.push('\n');
            line = match self.read("... ")? {
                Entry::Line(l) => l,
                // Ctrl-C drops the unfinished message; the end of input sends it.
                Entry::Interrupted => return Ok(Entry::Interrupted),
                Entry::End => break,
            };
        }
        self.remember(&format!("\"\"\"{text}\"\"\""));
        Ok(Entry::Line(text))
    }

    fn remember(&mut self, line: &str) {
        if let Input::Editor { editor, history } = self
            && !line.trim().is_empty()
        {
            let _ = editor.add_history_entry(line);
            if let Some(h) = history {
                let _ = editor.save_history(h);
            }
        }
    }
}

/// A line that is a command: `/word` (a path such as `/usr/bin` is text).
fn command(line: &str) -> Option<&str> {
    let word = line
        .strip_prefix('/')?
        .split_whitespace()
        .next()
        .unwrap_or("");
    (!word.contains('/')).then_some(word)
}

pub fn run(gpu: &GpuOptions, a: &ChatArgs) -> Result<()> {
    // Flags are checked before the model loads.
    a.sampling
        .params(a.max_tokens, &SamplingDefaults::default())?;
    if a.system.as_ref().is_some_and(|s| s.trim().is_empty()) {
        anyhow::bail!("--system must not be empty");
    }
    let engine = load_engine(gpu, &a.load, ModelOptions::default())?;
    warn_if_base_model(&engine, &a.load);
    let (params, max_tokens) = a.sampling.params(a.max_tokens, &engine.sampling_defaults)?;
    // Ctrl-C stops a reply; at a piped prompt (a terminal's is rustyline's) it says how to
    // leave, and a second one quits.
    let at_prompt = Arc::new(AtomicBool::new(false));
    let interrupts = Arc::new(AtomicU32::new(0));
    on_interrupt(engine.cancel.clone(), at_prompt.clone(), interrupts.clone())?;
    eprintln!(
        "{} | seed {} | /help lists the commands, /exit quits, Ctrl-C stops a reply",
        engine.adapter(),
        params.seed
    );
    let mut session = Session {
        // Room kept for the reply when old turns must go.
        reserve: max_tokens.min(engine.ctx() / 4),
        options: GenerateOptions::new(max_tokens, params),
        chat: match &a.system {
            Some(system) => Conversation::with_system(system),
            None => Conversation::new(),
        },
        engine,
        dim: std::io::stderr().is_terminal(),
        stdout: std::io::stdout(),
    };
    let mut input = Input::new();
    loop {
        at_prompt.store(true, Ordering::Relaxed);
        let entry = input.message()?;
        at_prompt.store(false, Ordering::Relaxed);
        let line = match entry {
            Entry::End => {
                writeln!(session.stdout)?;
                break;
            }
            Entry::Interrupted => {
                if interrupts.fetch_add(1, Ordering::Relaxed) > 0 {
                    break;
                }
                eprintln!("{LEAVE}");
                continue;
            }
            Entry::Line(line) => line,
        };
        interrupts.store(0, Ordering::Relaxed);
        let line = line.trim();
        match command(line) {
            _ if line.is_empty() => {}
            Some(name) => {
                if !session.command(name)? {
                    break;
                }
            }
            None => session.answer(line)?,
        }
    }
    Ok(())
}

/// Ctrl-C: cancels a reply under way; at the prompt, says how to leave, and quits the second
/// time.
fn on_interrupt(
    cancel: Arc<AtomicBool>,
    at_prompt: Arc<AtomicBool>,
    interrupts: Arc<AtomicU32>,
) -> Result<()> {
    ctrlc::set_handler(move || {
        if !at_prompt.load(Ordering::Relaxed) {
            cancel.store(true, Ordering::Relaxed);
        } else if interrupts.fetch_add(1, Ordering::Relaxed) == 0 {
            let _ = writeln!(std::io::stderr(), "\n{LEAVE}");
        } else {
            std::process::exit(130);
        }
    })?;
    Ok(())
}

/// A chat under way.
struct Session {
    engine: Engine,
    chat: Conversation,
    options: GenerateOptions,
    /// Context kept free for the reply when old turns must go.
    reserve: usize,
    /// Stats dimmed on a terminal.
    dim: bool,
    stdout: std::io::Stdout,
}

impl Session {
    /// Runs a slash command; false to quit.
    fn command(&mut self, name: &str) -> Result<bool> {
        let out = &mut self.stdout;
        match name {
            "exit" | "quit" | "bye" => return Ok(false),
            "reset" | "clear" => {
                self.chat.reset();
                writeln!(out, "(new conversation)")?;
            }
            "help" | "?" => writeln!(out, "{HELP}")?,
            other => writeln!(out, "(unknown command /{other}; /help lists the commands)")?,
        }
        Ok(true)
    }

    /// Answers `line`, streaming the reply to stdout, then its stats to stderr.
    fn answer(&mut self, line: &str) -> Result<()> {
        // A spinner on stderr until the first words come (a long prompt takes a while).
        let mut spinner = self.dim.then(|| {
            let s = indicatif::ProgressBar::new_spinner();
            s.set_message("reading the prompt");
            s.enable_steady_tick(std::time::Duration::from_millis(120));
            s
        });
        // A reply nobody can read any more stops, and so does the chat.
        let mut failed = None;
        let stop = self.engine.cancel.clone();
        let stdout = &mut self.stdout;
        let result = self.chat.turn(
            &mut self.engine,
            line,
            &self.options,
            self.reserve,
            |delta| {
                if let Some(s) = spinner.take() {
                    s.finish_and_clear();
                }
                if failed.is_none()
                    && let Err(e) = write!(stdout, "{}", delta.text).and_then(|()| stdout.flush())
                {
                    failed = Some(e);
                    stop.store(true, Ordering::Relaxed);
                }
            },
        );
        if let Some(s) = spinner.take() {
            s.finish_and_clear();
        }
        if let Some(e) = failed {
            return Err(anyhow::Error::new(e).context("writing to stdout"));
        }
        match result {
            Ok((g, notes)) => self.report(&g, notes),
            Err(e) => {
                eprintln!("({e})");
                Ok(())
            }
        }
    }

    /// Ends the reply's line and says on stderr how the turn went.
    fn report(&mut self, g: &Generation, notes: TurnNotes) -> Result<()> {
        writeln!(self.stdout)?;
        if notes.dropped_turns > 0 {
            eprintln!(
                "(the context was full: dropped the {} oldest turn(s))",
                notes.dropped_turns
            );
        }
        match g.stop {
            StopReason::Cancelled => eprintln!("(interrupted)"),
            StopReason::ContextFull => eprintln!("(the context is full)"),
            _ => {}
        }
        let stats = format!(
            "prompt {} tokens at {:.1} tok/s, reply {} tokens at {:.1} tok/s",
            g.prompt_tokens,
            g.prefill_tokens_per_second(),
            g.ids.len(),
            g.decode_tokens_per_second()
        );
        if self.dim {
            eprintln!("\x1b[2m{stats}\x1b[0m");
        } else {
            eprintln!("{stats}");
        }
        Ok(())
    }
}

const LEAVE: &str = "(Ctrl-C again, /exit or Ctrl-D quits)";
