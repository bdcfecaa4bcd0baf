"""A chat template cannot outlast its time limit or build huge values, wherever it comes from:
a GGUF file read by `tavern models info`, a llama-server's `/props`, or a render.

Before the fix one filter call on a huge string counted as one step and the clock was read every
1,024 steps, so `{{ s|wordcount }}` in a loop ran 537 s, and `tavern models info` on a 300-byte
GGUF hung. Everything hostile here runs in a child Python under an address-space limit and a
generous timeout, so the code before the fix fails these tests instead of hanging them."""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# The issue's template: a 14 MB string, then a thousand word counts of it.
ISSUE_TEMPLATE = "{% set s = 'a ' * 7000000 %}{% for i in range(1000) %}{{ s|wordcount }}{% endfor %}"
# Within every size limit, but each step takes a tenth of a second: only the clock stops it.
SLOW_TEMPLATE = "{% set s = 'a ' * 900000 %}{% for i in range(100000) %}{{ s|wordcount }}{% endfor %}"

_MEMORY = 2 * 1024**3
_BOUND_S = 90  # catches a hang only; the fixed code ends in seconds


def _bounded(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY, _MEMORY))

    try:
        return subprocess.run(
            args, capture_output=True, text=True, timeout=_BOUND_S, preexec_fn=cap, **kwargs
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {_BOUND_S} s: {args[-1][:120]!r}")


_RENDER = """
import json, sys
from tavern.errors import TemplateError
from tavern.prompt import template_guards
from tavern.prompt.templates import format_from_jinja
template_guards.MAX_SECONDS = float(sys.argv[2])
try:
    format_from_jinja(sys.argv[1], "<s>", "</s>", "evil")
except TemplateError as err:
    print(json.dumps(str(err)))
else:
    print(json.dumps("rendered"))
"""


def _render_error(source: str, seconds: float = 2.0) -> str:
    done = _bounded([sys.executable, "-c", _RENDER, source, str(seconds)])
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_the_issues_template_is_refused_before_it_builds_the_string():
    message = _render_error(ISSUE_TEMPLATE)
    assert message == (
        "prompt format 'custom:evil': stopped: template built a string of 14000000 characters (limit 2000000)"
    )


def test_slow_steps_are_stopped_by_the_clock():
    message = _render_error(SLOW_TEMPLATE)
    assert message == "prompt format 'custom:evil': stopped: template ran longer than 2 s"


_ABANDON = """
import json, sys, threading, time
from tavern.errors import TemplateError
from tavern.prompt import template_guards, template_render
from tavern.prompt.templates import format_from_jinja
template_guards.MAX_SECONDS = 1.0
messages = []
for attempt in range(2):
    try:
        format_from_jinja(sys.argv[1], "", "", "evil")
    except TemplateError as err:
        messages.append(str(err))
# The render stopped by the clock (the caller's wait or its own per-step check, whichever came
# first) leaves no busy thread: each render thread has ended or waits idle for the next render.
# Were it to run on, its 100,000 slow steps would outlast the test's bound.
def busy():
    alive = [t for t in threading.enumerate() if t.name == "tavern-template"]
    return len(alive) - template_render._THREADS._idle
while busy() > 0:
    time.sleep(0.05)
print(json.dumps(messages))
"""


def test_an_abandoned_render_stops_and_is_not_run_again():
    done = _bounded([sys.executable, "-c", _ABANDON, SLOW_TEMPLATE])
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = json.loads(done.stdout)
    assert first == "prompt format 'custom:evil': stopped: template ran longer than 1 s"
    # The same template again (select_format tries it dozens of times): refused at once.
    assert second == first + " (on an earlier render)"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # A list of references to one big string is small to build and huge to print.
        ("{% set s = 'a' * 1000000 %}{{ [s] * 100000 }}", "would write a value of over"),
        ("{% set s = 'a' * 1000000 %}{{ ([s] * 100000)|tojson }}", "would write a value of over"),
        ("{% set s = 'a' * 1000000 %}{{ ([s] * 100000)|join(',') }}", "would write a value of over"),
        ("{% set s = 'a' * 1000000 %}{{ ([s] * 100000) ~ '' }}", "would write a value of over"),
        ("{% set s = 'a' * 1000000 %}{{ '%s' % ([s] * 100000,) }}", "would write a value of over"),
        ("{% set s = 'a' * 1000000 %}{{ '{}'.format([s] * 100000) }}", "would write a value of over"),
        # Distinct big strings kept in a namespace: each within the limit, their sum is not.
        (
            "{% set s = 'a' * 1500000 %}{% set ns = namespace(l=[]) %}"
            "{% for i in range(3000) %}{% set ns.l = ns.l + [s ~ i] %}{% endfor %}{{ ns.l|length }}",
            "characters in all",
        ),
        ("{{ ('ab' * 900000)|urlize }}", "urlize filter on over 100000 characters"),
        ("{{ (range(1000)|list) * 1000 }}", "template built a list of 1000000 items (limit 200000)"),
        ("{{ 'x'.encode() * 10**9 }}", "template built a string of 1000000000 characters"),
    ],
    ids=[
        "print",
        "tojson",
        "join",
        "concat",
        "percent",
        "format",
        "namespace hoard",
        "urlize",
        "list",
        "bytes",
    ],
)
def test_values_too_big_to_print_or_keep_are_refused(source: str, expected: str):
    message = _render_error(source, seconds=30.0)
    assert expected in message, message
    assert "\n" not in message and "memory" not in message


def test_a_big_chat_still_renders_with_the_models_template():
    # The size limits grow with the chat: a 3 MB message through a foreign template is fine.
    from tavern.prompt.templates import format_from_jinja

    fmt = format_from_jinja(
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content|trim + '\\n' }}{% endfor %}", "", "", "big"
    )
    text = "word " * 600_000
    out = fmt.render([{"role": "user", "content": text}], add_generation_prompt=False)
    assert out == "<|user|>" + text.strip() + "\n"


def _gguf(path: Path, template: str) -> Path:
    """A GGUF with no tensors: its metadata is all `tavern models info` needs."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    kvs = [
        s("general.architecture") + struct.pack("<I", 8) + s("llama"),
        s("general.name") + struct.pack("<I", 8) + s("Evil"),
        s("tokenizer.chat_template") + struct.pack("<I", 8) + s(template),
    ]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    return path


@pytest.mark.parametrize("template", [ISSUE_TEMPLATE, SLOW_TEMPLATE], ids=["issue", "slow steps"])
def test_models_info_on_a_small_hostile_gguf_ends(tmp_path: Path, template: str):
    model = _gguf(tmp_path / "evil.gguf", template)
    assert model.stat().st_size < 300
    tavern = Path(sys.executable).with_name("tavern")
    done = _bounded([str(tavern), "--home", str(tmp_path / "home"), "models", "info", str(model)])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    # The model's own template is unusable, so the format falls back to a guess (ChatML).
    assert "prompt format    chatml" in done.stdout


class _PropsServer(BaseHTTPRequestHandler):
    template = ""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = {
            "model_path": "/models/evil.gguf",
            "chat_template": _PropsServer.template,
            "default_generation_settings": {"n_ctx": 4096},
        }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def props_server() -> Iterator[str]:
    _PropsServer.template = SLOW_TEMPLATE
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PropsServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


_FROM_SERVER = """
import json, sys
from tavern.backends import Profile
from tavern.engines.remote.engine import RemoteEngine
from tavern.prompt.templates import select_format
engine = RemoteEngine(Profile(name="evil", api="llamacpp", url=sys.argv[1]))
engine.load()
# What a chat session does with the server's template (Session.prompt_format).
fmt, reason = select_format(engine.model_name, engine.metadata().get("tokenizer.chat_template"), None)
print(json.dumps([fmt.id, reason]))
"""


def test_a_servers_hostile_template_from_props_ends(props_server: str):
    done = _bounded([sys.executable, "-c", _FROM_SERVER, props_server])
    assert done.returncode == 0, done.stderr[-2000:]
    fmt_id, reason = json.loads(done.stdout)
    assert fmt_id == "chatml"
    assert "its own chat template is unusable" in reason
    assert "template ran longer than 5 s" in reason and "\n" not in reason
