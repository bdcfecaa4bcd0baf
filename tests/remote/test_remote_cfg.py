"""CFG on remote backends: text-generation-webui and KoboldCpp get `guidance_scale` and the
negative prompt in the request (checked on the recording server of tests/remote/fault_server.py,
as no real one is available here); a backend without CFG says so once (a real
`python -m llama_cpp.server`, through `tavern chat`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from remote.fault_server import Handler
from tavern.backends import BackendStore, Profile
from tavern.engines.base import Finished, GenerationRequest
from tavern.engines.remote.engine import RemoteEngine
from tavern.session import Tavern


def _send(engine: RemoteEngine, scale: float) -> tuple[Finished, dict]:
    Handler.requests.clear()
    req = GenerationRequest(prompt="<pos>", negative_prompt="<neg>", guidance_scale=scale, max_tokens=8)
    final = list(engine.generate(req))[-1]
    return final, Handler.requests[-1]


@pytest.mark.parametrize("api,path", [("textgen", "/tg/v1"), ("kobold", "/kb")])
def test_cfg_fields_reach_backends_that_take_them(fault_url: str, api: str, path: str) -> None:
    engine = RemoteEngine(Profile(name=api, api=api, url=fault_url + path), timeout=5)
    final, body = _send(engine, 1.5)
    assert final.error is None and final.text.startswith("Hello")
    assert body["guidance_scale"] == 1.5 and body["negative_prompt"] == "<neg>" and body["prompt"] == "<pos>"
    assert not engine.notices
    _final, body = _send(engine, 1.0)  # scale 1 is CFG off: nothing sent
    assert "guidance_scale" not in body and "negative_prompt" not in body


def test_a_chat_negative_prompt_goes_to_text_generation_webui(fault_url: str, home: Path) -> None:
    BackendStore(home).add("tg", "textgen", fault_url + "/tg/v1")
    app = Tavern.open(home, **{"memory.enabled": False})
    app.backend_override = "tg"
    session = app.open_chat("Mira")
    session.set_cfg(scale=1.8, negative="Mira refuses and lectures the user.")
    Handler.requests.clear()
    final = list(session.send("hello there"))[-1]
    assert final.error is None
    body = Handler.requests[-1]
    assert body["guidance_scale"] == 1.8
    # The whole negative prompt, formatted like the prompt, with the negative text in it.
    assert "Mira refuses and lectures the user." in body["negative_prompt"]
    assert "Mira refuses and lectures" not in body["prompt"] and "hello there" in body["negative_prompt"]
    assert session.chat[-1].extra["api"] == "textgen"


def test_cfg_unavailable_is_said_once_on_llama_cpp_server(llama_server: str, home: Path) -> None:  # noqa: F811
    env = {**os.environ, "TAVERN_HOME": str(home)}
    tav = [sys.executable, "-m", "tavern"]
    subprocess.run([*tav, "backends", "add", "srv", "--api", "openai-text", "--url", llama_server + "/v1"],
                   env=env, check=True, capture_output=True)
    subprocess.run([*tav, "cfg", "Mira", "--negative", "Be rude.", "--guidance", "1.5"], env=env, check=True,
                   capture_output=True)
    out = subprocess.run([*tav, "chat", "Mira", "--backend", "srv", "--max-tokens", "6", "--seed", "1"],
                         input="hello\nand again\n", env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("CFG is unavailable on this backend (openai-text)") == 1, out.stderr
    assert out.stdout.strip()  # both turns still got replies
