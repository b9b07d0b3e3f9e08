#!/usr/bin/env python3
"""Drives a running `gemma-wgpu serve` with the official `openai` package (tests/server.rs
starts the server and runs this). Usage: openai_client.py BASE_URL. Exits non-zero on failure."""

import sys

import openai
from openai import OpenAI

base = sys.argv[1]
client = OpenAI(base_url=f"{base}/v1", api_key="not-needed")

models = client.models.list()
assert len(models.data) == 1, models
model = models.data[0].id

# Non-streaming chat, greedy, with usage counts.
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}],
                                   max_tokens=8, temperature=0)
assert r.object == "chat.completion", r
assert r.choices[0].message.role == "assistant"
assert isinstance(r.choices[0].message.content, str)
assert r.choices[0].finish_reason in ("stop", "length")
assert r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 0
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
greedy = r.choices[0].message.content

# Streaming gives the same text, chunk by chunk.
stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}],
                                        max_tokens=8, temperature=0, stream=True)
pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
assert "".join(pieces) == greedy, (pieces, greedy)

# Seeded sampling repeats itself.
a = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                   max_tokens=6, temperature=1.0, top_p=0.9, seed=7)
b = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                   max_tokens=6, temperature=1.0, top_p=0.9, seed=7)
assert a.choices[0].message.content == b.choices[0].message.content

# Text completions, streaming and not.
c = client.completions.create(model=model, prompt="Once upon a time", max_tokens=5, temperature=0)
assert c.object == "text_completion" and isinstance(c.choices[0].text, str)
s = client.completions.create(model=model, prompt="Once upon a time", max_tokens=5, temperature=0, stream=True)
assert "".join(x.choices[0].text for x in s) == c.choices[0].text

# A stop string cuts the text before it.
if len(greedy) > 2:
    stop = greedy[2:4] if greedy[2:4].strip() else greedy[1:3]
    if stop.strip():
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}],
                                           max_tokens=8, temperature=0, stop=[stop])
        assert stop not in r.choices[0].message.content
        assert greedy.startswith(r.choices[0].message.content)
        assert r.choices[0].finish_reason == "stop"

# Bad requests are 400s the client raises as BadRequestError.
for bad in [dict(messages=[]), dict(messages=[{"role": "user", "content": ""}]),
            dict(messages=[{"role": "user", "content": "hi"}], n=2)]:
    try:
        client.chat.completions.create(model=model, max_tokens=2, **bad)
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["message"], e
    else:
        raise AssertionError(f"accepted {bad}")

print("openai client: all checks passed")
