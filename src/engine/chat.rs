//! A multi-turn conversation over one engine, reusing the cache between turns.

use super::{Engine, Generation, Message, SamplingParams};
use crate::{Error, Result};

/// What a turn had to do to the conversation before answering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TurnNotes {
    /// Oldest turns dropped so the conversation fits the context.
    pub dropped_turns: usize,
}

/// The messages so far, and the text the engine's cache corresponds to.
#[derive(Default)]
pub struct Conversation {
    pub messages: Vec<Message>,
    /// A system message put before the messages each turn (never dropped).
    pub system: Option<String>,
    /// The rendered template text of what the cache holds (prompt and reply), when known.
    rendered: Option<String>,
}

impl Conversation {
    pub fn new() -> Conversation {
        Conversation::default()
    }

    /// The messages as the template gets them: the system message first.
    fn with_system(&self) -> Vec<Message> {
        let system = self.system.as_ref().map(|s| Message {
            role: "system".into(),
            content: s.clone(),
        });
        system.into_iter().chain(self.messages.clone()).collect()
    }

    pub fn reset(&mut self) {
        self.messages.clear();
        self.rendered = None;
    }

    /// Adds the user's message and generates the reply, prefilling only what the cache lacks:
    /// the previous reply's tokens are kept as generated and only the template text after
    /// them is tokenized. Keeps `reserve` tokens of the context free for the reply, dropping
    /// the oldest turns when needed.
    pub fn turn(
        &mut self,
        engine: &mut Engine,
        user: &str,
        max_tokens: usize,
        reserve: usize,
        params: &SamplingParams,
        on_text: impl FnMut(&str),
    ) -> Result<(Generation, TurnNotes)> {
        let ctx = engine.model.ctx;
        let mut notes = TurnNotes::default();
        self.messages.push(Message {
            role: "user".into(),
            content: user.to_string(),
        });
        let mut text = engine.tokenizer.render_chat(&self.with_system(), true)?;
        let mut ids = engine.tokenizer.encode(&text, false)?;
        while ids.len() + reserve > ctx && self.messages.len() > 1 {
            self.messages.drain(..2.min(self.messages.len() - 1));
            notes.dropped_turns += 1;
            self.rendered = None;
            text = engine.tokenizer.render_chat(&self.with_system(), true)?;
            ids = engine.tokenizer.encode(&text, false)?;
        }
        if ids.len() >= ctx {
            self.messages.pop();
            return Err(Error::ContextFull {
                needed: ids.len() + 1,
                ctx,
            });
        }
        // Reuse the cache's tokens where the new text extends what they stand for.
        if let Some(done) = &self.rendered
            && let Some(rest) = text.strip_prefix(done.as_str())
        {
            let mut reused = engine.context().to_vec();
            reused.extend(engine.tokenizer.encode(rest, false)?);
            ids = reused;
        }
        let g = engine.generate_reusing(&ids, max_tokens, params, on_text)?;
        self.rendered = Some(text + &g.text);
        self.messages.push(Message {
            role: "assistant".into(),
            content: g.text.clone(),
        });
        Ok((g, notes))
    }
}
