//! The Gemma 2 model end to end against Hugging Face transformers (fixtures written by
//! tests/fixtures/make_fixtures.py; the tests need no Python).

mod chained;
mod engine;
mod fixtures;
mod gpu;
mod real;
mod reference;
