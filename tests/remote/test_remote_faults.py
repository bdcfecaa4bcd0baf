"""Faults a real server cannot produce on demand, from tests/remote/fault_server.py."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading

import pytest

from remote.fault_server import Handler
from tavern.backends import BackendStore, Profile
from tavern.engines.base import Finished, GenerationRequest, Token
from tavern.engines.remote import engine as remote_engine
from tavern.engines.remote.engine import RemoteEngine
from tavern.engines.samplers import SamplerSettings

KEY = "sk-secret-123456"


pytestmark = pytest.mark.usefixtures("fast_backoff")


def run(engine, sampler=None, cancel=None):
    req = GenerationRequest(prompt="p", messages=[{"role": "user", "content": "hi"}], sampler=sampler)
    events = list(engine.generate(req, cancel))
    final = events[-1]
    assert isinstance(final, Finished)
    return "".join(e.text for e in events if isinstance(e, Token)), final


def make(url, mode, tmp_path=None, key="", api="openai-chat"):
    store = BackendStore(tmp_path) if tmp_path else None
    prof = Profile(name=mode, api=api, url=f"{url}/{mode}", key=key)
    if store:
        store.save(prof)
    return RemoteEngine(prof, store=store, timeout=5)


def test_server_dying_mid_stream_keeps_the_partial_reply(fault_url):
    streamed, final = run(make(fault_url, "die"))
    assert streamed == final.text == "Hello there"
    assert "closed the connection mid-reply" in final.error
    assert final.stats.stop_reason == "error"


def test_malformed_sse_is_one_clear_error_and_keeps_the_text(fault_url):
    _, final = run(make(fault_url, "garbage"))
    assert final.text == "Hi"
    assert "malformed stream" in final.error


def test_a_400_naming_a_parameter_retries_without_it_and_remembers(fault_url, tmp_path):
    engine = make(fault_url, "param400", tmp_path)
    sampler = SamplerSettings(min_p=0.05, top_k=40)
    _, final = run(engine, sampler)
    assert final.error is None and final.text == "Hello world"
    assert any("min_p" in n and "Unrecognized request argument" in n for n in engine.notices)
    assert BackendStore(tmp_path).get("param400").ignored == ["min_p"]
    # A new engine on the same profile no longer sends it.
    Handler.requests.clear()
    engine2 = RemoteEngine(BackendStore(tmp_path).get("param400"), timeout=5)
    _, final = run(engine2, sampler)
    assert final.error is None and len(Handler.requests) == 1
    assert "min_p" not in Handler.requests[0] and Handler.requests[0]["top_k"] == 40


def test_429_before_any_token_is_retried(fault_url):
    _, final = run(make(fault_url, "flaky429"))
    assert final.error is None and final.text == "Hello world"


def test_5xx_gives_the_servers_message_after_retries(fault_url):
    Handler.seen.pop("down500", None)
    _, final = run(make(fault_url, "down500"))
    assert "503" in final.error and "model is loading" in final.error
    assert Handler.seen["down500"] == 1 + remote_engine.RETRIES


def test_401_never_shows_the_key(fault_url):
    _, final = run(make(fault_url, "auth401", key=KEY))
    assert "not authorised" in final.error and KEY not in final.error


def test_connection_refused_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prof = Profile(name="gone", api="openai-chat", url=f"http://127.0.0.1:{port}", key=KEY)
    _, final = run(RemoteEngine(prof, timeout=2))
    assert final.error.endswith("cannot connect (is the server running?)") and final.text == ""


def test_think_blocks_split_across_chunks_go_to_extra(fault_url):
    streamed, final = run(make(fault_url, "think"))
    assert streamed == final.text == "Hello!"
    assert final.extra["reasoning"] == "the user said hi; be kind"


def test_reasoning_content_goes_to_extra(fault_url):
    _, final = run(make(fault_url, "reasoning"))
    assert final.text == "Answer" and final.extra["reasoning"] == "thinking hard"


def test_cancel_stops_the_stream_at_once(fault_url):
    engine = make(fault_url, "slow")
    cancel = threading.Event()
    got = []
    req = GenerationRequest(prompt="p", messages=[{"role": "user", "content": "hi"}])
    for event in engine.generate(req, cancel):
        if isinstance(event, Token):
            got.append(event.text)
            cancel.set()
        else:
            final = event
    assert got == [" t0"] and final.text == " t0" and final.stats.stop_reason == "cancelled"


def test_unsupported_samplers_are_reported(fault_url):
    from tavern.engines.remote.params import map_sampler

    # Mapping only: Ollama has no XTC or DRY.
    fields, unsupported = map_sampler(SamplerSettings(xtc_probability=0.5, dry_multiplier=0.8, top_k=20), "ollama")
    assert fields == {"top_k": 20, "temperature": 1.0} and set(unsupported) == {"xtc_probability", "dry_multiplier"}
    # On a real stream: KoboldCpp has no frequency penalty. The reply still comes, the user is
    # told once that the sampler was not applied, and the request leaves it out.
    engine = make(fault_url, "ok", api="kobold")
    sampler = SamplerSettings(frequency_penalty=0.5, top_k=20)
    Handler.requests.clear()
    _, final = run(engine, sampler)
    assert final.error is None and final.text == "Hello kobold"
    assert engine.notices == ["kobold has no frequency_penalty: not applied"]
    [sent] = Handler.requests
    assert sent["top_k"] == 20 and "frequency_penalty" not in sent
    run(engine, sampler)
    assert len(engine.notices) == 1  # said once, not every turn


def test_profiles_keep_keys_in_a_0600_file_out_of_listings(tmp_path, fault_url):
    env = {**os.environ, "TAVERN_HOME": str(tmp_path), "MY_KEY": KEY}
    cli = [sys.executable, "-m", "tavern", "backends"]
    add = subprocess.run([*cli, "add", "srv", "--api", "openai-chat", "--url", fault_url + "/ok", "--key-env", "MY_KEY"],
                         env=env, capture_output=True, text=True)
    assert add.returncode == 0, add.stderr
    keys = tmp_path / "keys.toml"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600 and KEY in keys.read_text()
    assert KEY not in (tmp_path / "backends.toml").read_text()
    listing = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True)
    assert "srv\topenai-chat" in listing.stdout and KEY not in listing.stdout
    test = subprocess.run([*cli, "test", "srv"], env=env, capture_output=True, text=True)
    assert "fault-model" in test.stdout
    gone = subprocess.run([*cli, "remove", "srv"], env=env, capture_output=True, text=True)
    assert gone.returncode == 0 and KEY not in keys.read_text()
    missing = subprocess.run([*cli, "test", "srv"], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "no backend named 'srv'" in missing.stderr


def test_pulling_the_plug_mid_reply_loses_nothing_in_the_chat(fault_url, home):
    from tavern.session import Tavern

    app = Tavern.open(home)
    BackendStore(app.home.root).save(Profile(name="dies", api="openai-chat", url=fault_url + "/die"))
    app.backend_override = "dies"
    session = app.open_chat("Mira", new=True)
    before = len(session.chat)
    events = list(session.send("Tell me about the harbour"))
    final = events[-1]
    assert "closed the connection mid-reply" in final.error
    reopened = Tavern.open(home).open_chat("Mira")
    assert len(reopened.chat) == before + 2
    assert reopened.chat[-2].mes == "Tell me about the harbour" and reopened.chat[-2].is_user
    reply = reopened.chat[-1]
    assert reply.mes == "Hello there" and "mid-reply" in reply.extra["tavern"]["error"]
    assert reply.extra["api"] == "openai-chat" and reply.extra["model"] == "fault-model"
    assert app.engines.current.count_method == "estimate"  # this server has no tokenize endpoint
