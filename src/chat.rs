//! `gemma-wgpu chat`: a multi-turn conversation in the terminal.
//!
//! The whole conversation is rendered with the model's chat template each turn; the cache
//! keeps what it already holds, so a turn prefills only its new tokens. `/reset` starts over,
//! `/exit` (or end of input) quits, Ctrl-C stops the reply being written. When the context
//! fills up, the oldest turns are dropped (the cache is then rebuilt).

use crate::{LoadArgs, SamplingArgs, load_engine};
use anyhow::Result;
use clap::Args;
use gemma_wgpu::engine::chat::Conversation;
use gemma_wgpu::engine::{SamplingDefaults, StopReason};
use gemma_wgpu::gpu::GpuOptions;
use gemma_wgpu::model::ModelOptions;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::Ordering;

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
    /// A system message at the start of the conversation (kept across /reset).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
}

pub fn run(gpu: &GpuOptions, a: &ChatArgs) -> Result<()> {
    // Flags are checked before the model loads.
    a.sampling
        .params(a.max_tokens, &SamplingDefaults::default())?;
    let mut engine = load_engine(gpu, &a.load, ModelOptions::default())?;
    let (params, max_tokens) = a.sampling.params(a.max_tokens, &engine.sampling_defaults)?;
    let cancel = engine.cancel.clone();
    let stop = cancel.clone();
    ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed))?;
    // Room kept for the reply when old turns must go.
    let reserve = max_tokens.min(engine.model.ctx / 4);
    let dim = std::io::stderr().is_terminal();
    let mut chat = Conversation::new();
    chat.system = a.system.clone();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!(
        "{} | seed {} | /reset starts over, /exit quits, Ctrl-C stops a reply",
        engine.model.gpu.describe(),
        params.seed
    );
    loop {
        write!(stdout, "> ")?;
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            writeln!(stdout)?;
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                chat.reset();
                writeln!(stdout, "(new conversation)")?;
                continue;
            }
            _ => {}
        }
        // A reply nobody can read any more stops, and so does the chat.
        let mut failed = None;
        let result = chat.turn(&mut engine, line, max_tokens, reserve, &params, |piece| {
            if failed.is_none()
                && let Err(e) = write!(stdout, "{piece}").and_then(|()| stdout.flush())
            {
                failed = Some(e);
                stop.store(true, Ordering::Relaxed);
            }
        });
        if let Some(e) = failed {
            return Err(anyhow::Error::new(e).context("writing to stdout"));
        }
        let (g, notes) = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!("({e})");
                continue;
            }
        };
        writeln!(stdout)?;
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
        if dim {
            eprintln!("\x1b[2m{stats}\x1b[0m");
        } else {
            eprintln!("{stats}");
        }
    }
    Ok(())
}
