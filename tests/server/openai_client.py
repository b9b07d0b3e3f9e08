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

# A conversation after a tool call, as agents send it: an assistant message with tool calls
# and no content, then the tool's result; text parts; the usage chunk when asked for.
history = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
]
r = client.chat.completions.create(model=model, messages=history, max_tokens=4, temperature=0)
assert r.choices[0].message.role == "assistant", r
chunks = list(client.chat.completions.create(model=model, messages=history, max_tokens=4, temperature=0,
                                             stream=True, stream_options={"include_usage": True}))
assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0, chunks[-1]
assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content

# Log-probabilities, and llama-server's sampling names through extra_body.
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=4,
                                   temperature=0, logprobs=True, top_logprobs=2,
                                   extra_body={"top_k": 20, "min_p": 0.01, "repeat_penalty": 1.0})
content = r.choices[0].logprobs.content
assert len(content) == r.usage.completion_tokens, r
assert all(len(c.top_logprobs) == 2 and c.logprob <= 0 for c in content), content
assert client.models.retrieve(model).id == model
# Streamed, each chunk carries the log-probabilities of its tokens.
s = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=4,
                                   temperature=0, logprobs=True, top_logprobs=2, stream=True)
streamed = [lp for c in s if c.choices and c.choices[0].logprobs for lp in c.choices[0].logprobs.content]
assert [lp.token for lp in streamed] == [lp.token for lp in content], (streamed, content)

# Bad requests are 400s the client raises as BadRequestError.
for bad in [dict(messages=[]), dict(messages=[{"role": "user", "content": ""}]),
            dict(messages=[{"role": "user", "content": "hi"}], n=2),
            dict(messages=[{"role": "user", "content": "hi"}],
                 tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]),
            dict(messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"})]:
    try:
        client.chat.completions.create(model=model, max_tokens=2, **bad)
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["message"], e
    else:
        raise AssertionError(f"accepted {bad}")

print("openai client: all checks passed")
