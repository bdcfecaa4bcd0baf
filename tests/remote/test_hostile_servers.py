"""Hostile or broken servers (issue #26 item 7), from tests/remote/hostile_server.py: whatever a
server sends, a turn ends with the reply so far and one line saying what was wrong, in bounded
time and memory; the length limit is Tavern's, not the server's to waive."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from remote.hostile_server import SHAPE_FIELDS, SHAPES, Hostile
from tavern.backends import BackendStore, Profile
from tavern.engines.base import Finished, GenerationRequest, Token
from tavern.engines.remote.engine import RemoteEngine
from tavern.engines.remote.http import RemoteError

pytestmark = pytest.mark.usefixtures("fast_backoff")


def make(
    url: str, mode: str, api: str = "openai-chat", store: BackendStore | None = None, **settings
) -> RemoteEngine:
    profile = Profile(name=mode, api=api, url=f"{url}/{mode}", **settings)
    if store is not None:
        store.save(profile)
    return RemoteEngine(profile, store=store, timeout=10)


def run(engine: RemoteEngine, max_tokens: int = 250) -> tuple[str, Finished]:
    req = GenerationRequest(prompt="p", messages=[{"role": "user", "content": "hi"}], max_tokens=max_tokens)
    events = list(engine.generate(req))
    final = events[-1]
    assert isinstance(final, Finished)
    assert all(isinstance(e, Token) for e in events[:-1])
    return "".join(e.text for e in events[:-1]), final


def one_line(error: str | None) -> str:
    assert error and "\n" not in error and "Traceback" not in error, error
    return error


# -- the length limit --------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["openai-chat", "openai-text", "llamacpp", "ollama"])
def test_a_stream_that_ignores_the_length_limit_is_stopped_at_it(hostile_url, api):
    engine = make(hostile_url, "overrun", api)
    streamed, final = run(engine, max_tokens=16)
    assert final.error is None
    assert streamed == final.text == "".join(f" w{i}" for i in range(16))  # the reply so far, kept
    assert final.stats.stop_reason == "length" and final.stats.gen_tokens == 16
    assert engine.take_notices() == [
        "the server sent more than the 16 tokens asked for: the reply was stopped there"
    ]


def test_a_400_naming_max_tokens_never_drops_the_limit(hostile_url, tmp_path):
    store = BackendStore(tmp_path)
    engine = make(hostile_url, "maxtok400", store=store)
    Hostile.requests.clear()
    _, final = run(engine, max_tokens=100)
    assert "max_tokens must be at most 64" in one_line(final.error) and final.text == ""
    assert Hostile.requests and all(r.get("max_tokens") == 100 for r in Hostile.requests)
    assert store.get("maxtok400").ignored == [] and engine.profile.ignored == []
    # The next turn still sends it.
    Hostile.requests.clear()
    run(engine, max_tokens=32)
    assert Hostile.requests[0]["max_tokens"] == 32


# -- time ----------------------------------------------------------------------------------------


def test_keep_alives_after_a_token_end_at_the_idle_timeout_keeping_the_reply(hostile_url):
    _, final = run(make(hostile_url, "keepalive", idle_timeout_s=1))
    assert final.text == "Hello"
    error = one_line(final.error)
    assert "no text for 1 s, only keep-alives (idle_timeout_s)" in error and "partial reply kept" in error
    assert hostile_url in error and final.stats.stop_reason == "error"


def test_keep_alives_alone_end_at_the_idle_timeout_without_retrying(hostile_url):
    Hostile.requests.clear()
    _, final = run(make(hostile_url, "keepalive0", idle_timeout_s=1))
    assert final.text == "" and "no text for 1 s" in one_line(final.error)
    assert len(Hostile.requests) == 1  # waiting again would only repeat the wait


def test_a_reply_that_never_ends_stops_at_the_deadline(hostile_url):
    streamed, final = run(make(hostile_url, "endless", deadline_s=1.5), max_tokens=100_000)
    assert streamed == final.text and final.text.startswith(" t0 t1")
    assert "ran past its deadline of 1.5 s (deadline_s)" in one_line(final.error)
    assert "partial reply kept" in final.error


def test_time_limits_are_profile_settings_kept_in_backends_toml(tmp_path):
    store = BackendStore(tmp_path)
    store.save(
        Profile(name="slow", api="openai-chat", url="http://127.0.0.1:9", idle_timeout_s=300, deadline_s=1800)
    )
    store.save(Profile(name="plain", api="openai-chat", url="http://127.0.0.1:9"))
    text = (tmp_path / "backends.toml").read_text()
    assert "idle_timeout_s = 300.0" in text and text.count("idle_timeout_s") == 1  # defaults not written
    assert (store.get("slow").idle_timeout_s, store.get("slow").deadline_s) == (300, 1800)
    assert (store.get("plain").idle_timeout_s, store.get("plain").deadline_s) == (120, 600)
    store.add("slow", "openai-chat", "http://127.0.0.1:10")  # an edit (the TUI's form) keeps them
    assert store.get("slow").idle_timeout_s == 300
    (tmp_path / "backends.toml").write_text(text.replace("idle_timeout_s = 300.0", 'idle_timeout_s = "soon"'))
    with pytest.raises(
        Exception, match=r"backend 'slow': idle_timeout_s must be a number of seconds above 0"
    ):
        store.get("slow")


# -- size ----------------------------------------------------------------------------------------


def test_a_50_mb_stream_line_is_an_error_and_the_reply_is_kept(hostile_url):
    _, final = run(make(hostile_url, "longline"))
    assert final.text == "Hello"
    assert "the server sent a stream line longer than 4 MiB" in one_line(final.error)
    assert "partial reply kept" in final.error


# -- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(len(SHAPES)), ids=[str(s)[:40] for s in SHAPES])
def test_valid_json_of_the_wrong_shape_is_one_line_naming_the_field(hostile_url, n):
    streamed, final = run(make(hostile_url, f"shape{n}"))
    assert streamed == final.text == "Hello"
    error = one_line(final.error)
    assert error.startswith(f"{hostile_url}/shape{n}/v1/chat/completions: ")  # names the server
    assert SHAPE_FIELDS[n] in error and "partial reply kept" in error


def test_html_from_models_props_and_completions_says_so(hostile_url):
    with pytest.raises(
        RemoteError, match=r"/v1/models: the server answered with HTML, not JSON \(status 200\)"
    ):
        make(hostile_url, "html").load()
    with pytest.raises(RemoteError, match=r"/props: the server answered with HTML, not JSON \(status 200\)"):
        make(hostile_url, "html", "llamacpp").load()
    with pytest.raises(
        RemoteError, match=r"/api/tags: the server answered with text that is not JSON \(status 200\)"
    ):
        make(hostile_url, "notjson", "ollama").load()
    with pytest.raises(RemoteError, match=r"`data` is a string, not a list"):
        make(hostile_url, "badmodels").load()
    for mode in ("html", "htmlplain"):
        _, final = run(make(hostile_url, mode))
        assert "the server answered with HTML" in one_line(final.error) and "(status 200)" in final.error
    _, final = run(make(hostile_url, "jsonbody"))
    assert "the server's answer is not an event stream: '{\"choices\"" in one_line(final.error)
    _, final = run(make(hostile_url, "html502"))
    assert final.error.endswith("server error 502: (an HTML page)")


# -- through the CLI ---------------------------------------------------------------------------


def _tavern(home: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """`tavern ARGS`, and the most memory (KiB) the process held; killed after 300 s (a hang)."""
    env = {**os.environ, "TAVERN_HOME": str(home)}
    out, err = home / "out.txt", home / "err.txt"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "tavern", *args], env=env, stdout=o, stderr=e)
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        watchdog.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    done = subprocess.CompletedProcess(args, proc.returncode, out.read_text(), err.read_text())
    return done, usage.ru_maxrss


def test_cli_html_from_the_server_is_one_error_line(hostile_url, home):
    BackendStore(home).save(Profile(name="web", api="openai-chat", url=hostile_url + "/html"))
    done, _ = _tavern(home, "chat", "Mira", "--backend", "web", "--message", "hi")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert (
        line.startswith("tavern: error: ") and "the server answered with HTML, not JSON (status 200)" in line
    )


def test_cli_a_50_mb_line_keeps_the_reply_in_bounded_memory(hostile_url, home):
    store = BackendStore(home)
    store.save(Profile(name="good", api="openai-chat", url=hostile_url + "/ok"))
    store.save(Profile(name="huge", api="openai-chat", url=hostile_url + "/longline"))
    good, good_kib = _tavern(home, "chat", "Mira", "--backend", "good", "--message", "hi")
    assert good.returncode == 0 and "Hello world" in good.stdout, good.stderr
    done, huge_kib = _tavern(home, "chat", "Mira", "--backend", "huge", "--message", "hi")
    # One 50 MB line once took 938 MB (the token count's answer read whole, then the stream's
    # line); now the 4 MiB bound and its copies: about 14 MiB more than a good reply.
    assert huge_kib - good_kib < 32 * 1024, (good_kib, huge_kib)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "Hello" in done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("tavern: error:")]
    assert len(errors) == 1 and "longer than 4 MiB (partial reply kept)" in errors[0]


def test_cli_keep_alives_end_at_the_idle_timeout_set_in_backends_toml(hostile_url, home):
    store = BackendStore(home)
    store.save(Profile(name="ka", api="openai-chat", url=hostile_url + "/keepalive"))
    toml = home / "backends.toml"
    toml.write_text(toml.read_text().replace("ignored = []", "ignored = []\nidle_timeout_s = 1"))
    done, _ = _tavern(home, "chat", "Mira", "--backend", "ka", "--message", "hi")
    assert done.returncode == 1 and "Traceback" not in done.stderr and "Hello" in done.stdout
    assert "no text for 1 s, only keep-alives (idle_timeout_s)" in done.stderr
