//! What a generation has produced so far: the ids, the text streamed piece by piece, the
//! log-probabilities, and the stop checks each new token goes through.

use super::{Delta, GenerateOptions, StopReason, TextStream, TokenLogprob};
use crate::Result;
use std::sync::atomic::{AtomicBool, Ordering};

pub(super) struct Output<'a, F: FnMut(Delta)> {
    pub ids: Vec<u32>,
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    /// `logprobs[fresh..]` are not yet given to `on_delta`.
    fresh: usize,
    stream: TextStream<'a>,
    on_delta: F,
    /// End-of-sequence ids that stop the generation (none with `ignore_eos`).
    eos: &'a [u32],
    max_tokens: usize,
    cancel: &'a AtomicBool,
}

impl<'a, F: FnMut(Delta)> Output<'a, F> {
    pub fn new(
        stream: TextStream<'a>,
        eos: &'a [u32],
        options: &GenerateOptions,
        cancel: &'a AtomicBool,
        on_delta: F,
    ) -> Self {
        Output {
            ids: vec![],
            text: String::new(),
            logprobs: vec![],
            fresh: 0,
            stream,
            on_delta,
            eos: if options.ignore_eos { &[] } else { eos },
            max_tokens: options.max_tokens,
            cancel,
        }
    }

    /// Why no token is to be sampled now: the budget spent or the generation cancelled.
    pub fn before_next(&self) -> Option<StopReason> {
        if self.ids.len() >= self.max_tokens {
            Some(StopReason::MaxTokens)
        } else if self.cancel.load(Ordering::Relaxed) {
            Some(StopReason::Cancelled)
        } else {
            None
        }
    }

    /// Takes the next token (with its log-probability when asked for) and streams what text
    /// it completes; the reason to stop after it, if any (it is not to be fed then).
    pub fn push(&mut self, next: u32, logprob: Option<TokenLogprob>) -> Result<Option<StopReason>> {
        self.ids.push(next);
        if self.eos.contains(&next) {
            return Ok(Some(StopReason::Eos));
        }
        self.logprobs.extend(logprob);
        if let Some(piece) = self.stream.push(next)? {
            self.emit(&piece);
        }
        Ok((self.ids.len() >= self.max_tokens).then_some(StopReason::MaxTokens))
    }

    /// Streams the text held back for a character boundary and any log-probabilities not yet
    /// given.
    pub fn finish(&mut self) -> Result<()> {
        let rest = self.stream.finish()?.unwrap_or_default();
        if !rest.is_empty() || self.fresh < self.logprobs.len() {
            self.emit(&rest);
        }
        Ok(())
    }

    fn emit(&mut self, piece: &str) {
        (self.on_delta)(Delta {
            text: piece,
            logprobs: &self.logprobs[self.fresh..],
        });
        self.fresh = self.logprobs.len();
        self.text.push_str(piece);
    }
}
