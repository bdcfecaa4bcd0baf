"""The OpenAI chat and text paths against a real `python -m llama_cpp.server` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tavern.backends import Profile
from tavern.engines.base import Finished, GenerationRequest, Token
from tavern.engines.remote.engine import RemoteEngine
from tavern.engines.samplers import SamplerSettings

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] not installed")


def _run(engine, **kw):
    req = GenerationRequest(max_tokens=12, sampler=SamplerSettings(temperature=0.0, seed=1), **kw)
    events = list(engine.generate(req))
    final = events[-1]
    assert isinstance(final, Finished)
    return "".join(e.text for e in events if isinstance(e, Token)), final


def test_chat_completions_stream_a_reply(llama_server):
    engine = RemoteEngine(Profile(name="srv", api="openai-chat", url=llama_server))
    engine.load()
    assert engine.model_name.endswith(".gguf")
    streamed, final = _run(engine, prompt="", messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ])
    assert final.error is None and streamed == final.text and final.text.strip()
    assert 0 < final.stats.gen_tokens <= 12 and final.stats.stop_reason in ("eos", "length")


def test_text_completions_continue_the_prompt(llama_server):
    engine = RemoteEngine(Profile(name="srv", api="openai-text", url=llama_server + "/v1"))
    engine.load()
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    streamed, final = _run(engine, prompt=prompt)
    assert final.error is None and "Paris" in streamed  # greedy, with SmolLM2's own format


def test_counts_come_from_the_servers_tokenizer(llama_server, model_path):
    from llama_cpp import Llama

    engine = RemoteEngine(Profile(name="srv", api="openai-chat", url=llama_server))
    text = "The harbour of Saltmere smells of tar and brine."
    llm = Llama(str(model_path), vocab_only=True, verbose=False)
    assert engine.count_tokens(text) == len(llm.tokenize(text.encode(), add_bos=False))
    assert engine.count_method == "server"


def test_tavern_chat_with_backend_end_to_end(llama_server, home):
    env = {**os.environ, "TAVERN_HOME": str(home)}
    tav = [sys.executable, "-m", "tavern"]
    add = subprocess.run([*tav, "backends", "add", "local-srv", "--api", "openai-chat", "--url", llama_server],
                         env=env, capture_output=True, text=True)
    assert add.returncode == 0, add.stderr
    out = subprocess.run([*tav, "chat", "Mira", "--backend", "local-srv", "--message", "hi", "--json",
                          "--max-tokens", "16", "--seed", "3"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    turn = json.loads(out.stdout)
    assert turn["reply"].strip() and turn["error"] is None
    chat = next((home / "chats").rglob("*.jsonl")).read_text().splitlines()
    last = json.loads(chat[-1])
    assert last["mes"] == turn["reply"] and last["extra"]["api"] == "openai-chat"
    assert last["extra"]["model"].endswith(".gguf")
    assert json.loads(chat[-2])["mes"] == "hi"
