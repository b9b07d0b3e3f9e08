//! A multi-turn conversation over one engine, reusing the cache between turns.

use super::{Delta, Engine, GenerateOptions, Generation, Message};
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

    /// A conversation whose every turn follows `system` (never dropped for room).
    pub fn with_system(system: &str) -> Conversation {
        Conversation {
            system: Some(system.to_string()),
            ..Conversation::new()
        }
    }

    /// Starts over (the system message stays).
    pub fn reset(&mut self) {
        self.messages.clear();
        self.rendered = None;
    }

    /// The messages as the template gets them: Gemma has no system role, so the system text
    /// opens the first user turn (as the server does).
    fn shown(&self) -> Vec<Message> {
        let mut shown = self.messages.clone();
        if let (Some(system), Some(first)) = (&self.system, shown.first_mut()) {
            first.content = format!("{system}\n\n{}", first.content);
        }
        shown
    }

    /// Adds the user's message and generates the reply, prefilling only what the cache lacks:
    /// the previous reply's tokens are kept as generated and only the template text after
    /// them is tokenized. Keeps `reserve` tokens of the context free for the reply, dropping
    /// the oldest turns when needed.
    pub fn turn(
        &mut self,
        engine: &mut Engine,
        user: &str,
        options: &GenerateOptions,
        reserve: usize,
        on_delta: impl FnMut(Delta),
    ) -> Result<(Generation, TurnNotes)> {
        let ctx = engine.ctx();
        let mut notes = TurnNotes::default();
        self.messages.push(Message {
            role: "user".into(),
            content: user.to_string(),
        });
        // Control tokens come from the template only: typed markup stays text.
        let mut chat = engine.tokenizer.render_chat_marked(&self.shown(), true)?;
        let mut ids = engine.tokenizer.encode_rendered(&chat, 0)?;
        while ids.len() + reserve > ctx && self.messages.len() > 1 {
            self.messages.drain(..2.min(self.messages.len() - 1));
            notes.dropped_turns += 1;
            self.rendered = None;
            chat = engine.tokenizer.render_chat_marked(&self.shown(), true)?;
            ids = engine.tokenizer.encode_rendered(&chat, 0)?;
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
            && chat.text.starts_with(done.as_str())
        {
            let mut reused = engine.context().to_vec();
            reused.extend(engine.tokenizer.encode_rendered(&chat, done.len())?);
            ids = reused;
        }
        let g = engine.generate_reusing(&ids, options, on_delta)?;
        self.rendered = Some(chat.text + &g.text);
        self.messages.push(Message {
            role: "assistant".into(),
            content: g.text.clone(),
        });
        Ok((g, notes))
    }
}
