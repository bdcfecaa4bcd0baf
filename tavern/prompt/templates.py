"""Instruct formats: the chat templates that turn a list of messages into one prompt string.

Who calls it: the prompt assembler (``tavern/prompt/assemble.py``) and the CLI pick a format with
:func:`select_format` (or :func:`get_format`) and render conversations with
:meth:`PromptFormat.render`; :mod:`tavern.prompt.st_presets` builds formats from SillyTavern
instruct presets; the engine reads :attr:`PromptFormat.template_adds_bos` and
:attr:`PromptFormat.stop`.

A format is an HF-style Jinja chat template (variables ``messages``, ``add_generation_prompt``,
``bos_token``, ``eos_token``) plus metadata. The bundled ones live in ``prompt_templates/``
(``<id>.jinja`` and ``formats.toml``). Every template, bundled or not (a GGUF's
``tokenizer.chat_template``, an imported preset), is compiled in one hardened sandbox
(:mod:`tavern.prompt.template_sandbox`) and rendered under limits on steps, sizes, output and
wall time (:mod:`tavern.prompt.template_guards`, :mod:`tavern.prompt.template_render`), so a
hostile template ends in one :class:`~tavern.errors.TemplateError` line instead of running
code, eating memory or hanging. Tavern's own templates (bundled, and those built from
SillyTavern presets) render on the caller's thread; foreign ones on a worker thread the caller
stops waiting for at the deadline.

Special tokens come out of templates as text (``<|im_start|>``, ``<s>``); the engine must
tokenize prompts with special-token parsing on, and add a BOS token itself only when
``template_adds_bos`` is false (and the model wants one). Give a format the model's own token
texts with :meth:`PromptFormat.with_tokens` (``select_format`` does it when told them).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import jinja2

from tavern.errors import TemplateError
from tavern.paths import bundled_dir
from tavern.prompt.template_render import TemplateRefused, render_template
from tavern.prompt.template_sandbox import compile_template, one_line

__all__ = [
    "TEMPLATES_DIR",
    "PromptFormat",
    "format_from_jinja",
    "get_format",
    "load_bundled_formats",
    "select_format",
]

#: Where the bundled templates and their metadata live (repository root / prompt_templates).
TEMPLATES_DIR = bundled_dir("prompt_templates")  # the repository folder, or tavern/_bundled in a wheel

ROLES = ("system", "user", "assistant")

# Formats whose template text is Tavern's own: rendered without the worker thread.
_TRUSTED_ORIGINS = frozenset({"bundled", "st-preset"})

# Marks the message left open by continue_final / prefill renders. Private-use characters
# survive trim()/strip()/split() in templates and do not occur in real chat text.
_OPEN_MARK = "\ue000tavern-open\ue001"


# ---------------------------------------------------------------------------------------------
# Messages


def _normalize_messages(messages: Iterable[object], label: str) -> list[dict[str, object]]:
    """Copy messages into plain dicts, checking their shape (role, content, optional name)."""
    if isinstance(messages, (str, bytes, dict)):
        raise TemplateError(f"{label}: messages must be a list of {{role, content}} objects")
    out: list[dict[str, object]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise TemplateError(f"{label}: message {i} is not an object")
        role = m.get("role")
        if role not in ROLES:
            raise TemplateError(f"{label}: message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        content = m.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise TemplateError(f"{label}: message {i} content is not text")
        msg = dict(m)
        msg["content"] = content.replace("\r\n", "\n")
        if msg.get("name") is not None and not isinstance(msg["name"], str):
            raise TemplateError(f"{label}: message {i} name is not text")
        out.append(msg)
    return out


# Conversations used to learn a format's pieces and to compare a GGUF template with the bundled
# ones. Alternating, system first or not, so strict upstream templates accept them.
_PROBE_SYS = {"role": "system", "content": "You are a test."}
_PROBE_CONVERSATIONS: tuple[tuple[dict[str, str], ...], ...] = (
    (_PROBE_SYS, {"role": "user", "content": "Hi"}),
    (
        _PROBE_SYS,
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Who are you?"},
    ),
    ({"role": "user", "content": "Hi"},),
    (
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there."},
        {"role": "user", "content": "Tell me more."},
    ),
)

# Conversations on which the concatenation identity is checked: what the assembler sends
# (system prompt first, greeting first, author's note as a mid-chat system message...).
_IDENTITY_SAMPLES: tuple[tuple[dict[str, str], ...], ...] = (
    (
        _PROBE_SYS,
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "And now?"},
    ),
    (
        _PROBE_SYS,
        {"role": "assistant", "content": "*waves* Welcome."},
        {"role": "user", "content": "Thanks."},
    ),
    ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey."}),
    (
        _PROBE_SYS,
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "Two"},
        {"role": "system", "content": "[Note: keep it short]"},
        {"role": "user", "content": "Три 🎲"},
    ),
    ({"role": "system", "content": ""}, {"role": "user", "content": ""}),
)


@dataclass(frozen=True)
class PromptFormat:
    """One instruct format: a sandboxed chat template plus what the engine needs around it.

    ``template_adds_bos``: prompts already start with the BOS token text (the template writes
    ``bos_token``, or its first marker is the BOS token, as ``<|im_start|>`` is SmolLM2's), so
    the engine must not add a BOS token again. ``stop``: stop strings for generation. ``system_role``: "system" when the
    format has a system turn, "user_prefix" when the system prompt is folded into the first
    user turn (Gemma, Llama 2, Mistral before v7). ``names``: whether the template prints
    message ``name`` fields ("none" for all HF-style formats; the assembler puts "Name: " in the
    content itself; SillyTavern presets may say "always"/"force"). ``variables``: extra template
    variables (SillyTavern sequences may use ``user_name``/``char_name``).
    """

    id: str
    name: str
    source: str
    stop: list[str] = field(default_factory=list)
    bos_token: str = ""
    eos_token: str = ""
    template_adds_bos: bool = False
    system_role: str = "system"
    upstream: str = ""
    origin: str = "bundled"
    names: str = "none"
    match: list[str] = field(default_factory=list)
    variables: dict[str, object] = field(default_factory=dict)

    # Frozen: formats are shared (the bundled ones are cached); derive copies with
    # with_tokens() / with_variables() / dataclasses.replace().

    @cached_property
    def _template(self) -> jinja2.Template:
        # Compiled on first use (loading every bundled format stays cheap); copies share it.
        return compile_template(self.source, self._label)

    def check(self) -> PromptFormat:
        """Compile the template now, so a broken one fails here; returns self."""
        _ = self._template
        return self

    @property
    def _label(self) -> str:
        return f"prompt format '{self.id}'"

    # -- rendering -----------------------------------------------------------------------------

    def _raw(
        self,
        messages: Sequence[Mapping[str, object]],
        add_generation_prompt: bool,
        continue_final: bool = False,
        prefill_turn: bool = False,
    ) -> str:
        variables = dict(self.variables)
        variables.update(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            # Tavern's own flags (HF templates ignore them): the last message is left open,
            # for a continuation or for a prefilled new turn.
            continue_final=continue_final,
            tavern_prefill=prefill_turn,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        return render_template(
            self._template, self._label, variables, trusted=self.origin in _TRUSTED_ORIGINS
        )

    def _render_open(
        self,
        history: Sequence[Mapping[str, object]],
        open_message: Mapping[str, object],
        prefill_turn: bool = False,
    ) -> str:
        """Render ``history + [open_message]`` with the last message left open: everything up to
        the end of its content, none of its end-of-turn suffix."""
        # Content is text here: normalized, or the empty content of a new turn.
        marked = dict(open_message, content=f"{open_message['content']}{_OPEN_MARK}")
        out = self._raw(
            [*history, marked], add_generation_prompt=False, continue_final=True, prefill_turn=prefill_turn
        )
        cut = out.rfind(_OPEN_MARK)
        if cut < 0:
            raise TemplateError(
                f"{self._label}: the template does not show the {open_message['role']} "
                "message being written, so it cannot be continued or prefilled"
            )
        return out[:cut]

    def render(
        self,
        messages: Sequence[Mapping[str, object]],
        add_generation_prompt: bool = True,
        continue_final: bool = False,
        prefill: str = "",
        *,
        gen_role: str = "assistant",
    ) -> str:
        """The prompt text for ``messages``.

        - ``add_generation_prompt``: end with the opening of a new assistant turn (the
          template's own generation prompt).
        - ``continue_final``: the last message stays open (no end-of-turn text) so the model
          extends it; the generation prompt is not added.
        - ``prefill``: text the new turn starts with ("Mira:"); the turn header is the one the
          template writes for a ``gen_role`` message in history, followed by ``prefill``.
        - ``gen_role``: whose turn is generated ("user" for impersonation).
        """
        msgs = _normalize_messages(messages, self._label)
        if gen_role not in ROLES:
            raise TemplateError(f"{self._label}: cannot generate a {gen_role!r} turn")
        if continue_final:
            if not msgs:
                raise TemplateError(f"{self._label}: there is no message to continue")
            return self._render_open(msgs[:-1], msgs[-1]) + prefill
        if prefill or (add_generation_prompt and gen_role != "assistant"):
            return self._render_open(msgs, {"role": gen_role, "content": ""}, prefill_turn=True) + prefill
        return self._raw(msgs, add_generation_prompt)

    # -- pieces, for incremental token counting ------------------------------------------------

    @cached_property
    def _trailer(self) -> str | None:
        """Text the template appends after the history when no generation prompt is asked for
        (Phi-3 writes eos_token there); None when the two renders do not line up."""
        probe = [{"role": "user", "content": "Hi"}]
        with_gen = self._raw(probe, True)
        without = self._raw(probe, False)
        if with_gen.startswith(without):
            return ""
        if (
            self.eos_token
            and without.endswith(self.eos_token)
            and with_gen.startswith(without[: -len(self.eos_token)])
        ):
            return self.eos_token
        return None

    def _history(self, messages: Sequence[Mapping[str, object]]) -> str:
        trailer = self._trailer
        if trailer is None:
            raise TemplateError(f"{self._label}: the format does not render message by message")
        out = self._raw(messages, False)
        if trailer and out.endswith(trailer):
            out = out[: -len(trailer)]
        return out

    def _extension(self, base: Sequence[Mapping[str, object]], message: Mapping[str, object]) -> str:
        before = self._history(base)
        after = self._history([*base, message])
        if not after.startswith(before):
            raise TemplateError(
                f"{self._label}: adding a {message['role']} message rewrites earlier text; "
                "the format does not render message by message"
            )
        return after[len(before) :]

    def render_message(self, message: Mapping[str, object], *, first: bool = False) -> str:
        """The text one message contributes to a rendered conversation.

        ``first=True`` for the conversation's first message: it may carry text a later message
        would not (a default system line, a leading system prompt written without a header).
        Only meaningful when :attr:`is_concatenative`; see there for the identity.
        """
        m = _normalize_messages([message], self._label)[0]
        if first:
            full = self._history([m])
            if not full.startswith(self.prefix):
                raise TemplateError(f"{self._label}: the format does not render message by message")
            return full[len(self.prefix) :]
        base: list[Mapping[str, object]] = [{"role": "user", "content": "Hi"}]
        if m["role"] != "assistant":
            base.append({"role": "assistant", "content": "Hello."})
        return self._extension(base, m)

    def generation_prompt(self, role: str = "assistant") -> str:
        """The text that opens a new ``role`` turn after a conversation."""
        probe = [{"role": "user", "content": "Hi"}]
        history = self._history(probe)
        if role == "assistant":
            full = self._raw(probe, True)
        else:
            full = self._render_open(probe, {"role": role, "content": ""}, prefill_turn=True)
        if not full.startswith(history):
            raise TemplateError(f"{self._label}: the generation prompt rewrites earlier text")
        return full[len(history) :]

    @cached_property
    def prefix(self) -> str:
        """Text before the first message whatever its role (often the BOS token text)."""
        fulls, candidates = [], []
        for m in ({"role": "user", "content": "Hi"}, dict(_PROBE_SYS)):
            try:
                full = self._history([m])
                piece = self.render_message(m)
            except TemplateError:
                return ""
            fulls.append(full)
            if piece and full.endswith(piece):
                candidates.append(full[: -len(piece)])
        for candidate in candidates:
            if all(full.startswith(candidate) for full in fulls):
                return candidate
        return ""

    @cached_property
    def is_concatenative(self) -> bool:
        """True when, for the conversations the assembler sends,

        ``render(msgs) == prefix + render_message(msgs[0], first=True)
        + "".join(render_message(m) for m in msgs[1:]) + generation_prompt()``

        so a prompt can be grown and token-counted message by message. False for formats that
        fold the system prompt into a user turn (Llama 2, Mistral v1-v3, Gemma) or rewrite
        earlier text when a message is added; the assembler must then render whole prompts.
        """
        try:
            gen = self.generation_prompt()
            for sample in _IDENTITY_SAMPLES:
                msgs = [dict(m) for m in sample]
                built = self.prefix + self.render_message(msgs[0], first=True)
                built += "".join(self.render_message(m) for m in msgs[1:]) + gen
                if built != self.render(msgs):
                    return False
        except TemplateError:
            return False
        return True

    # -- variants ------------------------------------------------------------------------------

    def with_tokens(self, bos_token: str | None = None, eos_token: str | None = None) -> PromptFormat:
        """A copy using the model's own BOS/EOS token texts.

        ``template_adds_bos`` is worked out again for the new BOS text: a ChatML template starts
        with ``<|im_start|>``, which is SmolLM2's BOS token, so the engine must not add one.
        """
        new = dataclasses.replace(
            self,
            bos_token=self.bos_token if bos_token is None else bos_token,
            eos_token=self.eos_token if eos_token is None else eos_token,
        )
        if new.bos_token != self.bos_token:
            new = dataclasses.replace(new, template_adds_bos=_starts_with_bos(new))
        return new

    def with_variables(self, **variables: object) -> PromptFormat:
        """A copy with extra template variables (e.g. ``user_name``/``char_name``)."""
        return dataclasses.replace(self, variables={**self.variables, **variables})


def _starts_with_bos(fmt: PromptFormat) -> bool:
    """Whether the format's prompts begin with the BOS token text (tried on the probe chats)."""
    if not fmt.bos_token:
        return False
    seen = False
    for probe in _PROBE_CONVERSATIONS:
        try:
            rendered = fmt.render([dict(m) for m in probe])
        except TemplateError:
            continue
        if not rendered.startswith(fmt.bos_token):
            return False
        seen = True
    return seen


# ---------------------------------------------------------------------------------------------
# Bundled formats


def _read_formats_toml(directory: Path) -> dict[str, object]:
    path = directory / "formats.toml"
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise TemplateError(f"{path}: bundled format list is missing") from None
    except tomllib.TOMLDecodeError as err:
        raise TemplateError(f"{path}: {one_line(str(err))}") from None
    if not isinstance(data, dict) or not data:
        raise TemplateError(f"{path}: no formats defined")
    return data


_BUNDLED: dict[str, PromptFormat] | None = None


def load_bundled_formats(directory: Path | None = None) -> dict[str, PromptFormat]:
    """All bundled formats, by id, in ``formats.toml`` order (the order selection tries them).

    Loaded once and cached when ``directory`` is the default.
    """
    global _BUNDLED
    if directory is None and _BUNDLED is not None:
        return dict(_BUNDLED)
    base = directory or TEMPLATES_DIR
    meta = _read_formats_toml(base)
    formats: dict[str, PromptFormat] = {}
    for fid, info in meta.items():
        where = f"{base / 'formats.toml'} [{fid}]"
        if not isinstance(info, dict):
            raise TemplateError(f"{where}: expected a table")
        path = base / f"{fid}.jinja"
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as err:
            raise TemplateError(f"{path}: cannot read template: {err.strerror}") from None
        try:
            for pattern in info.get("match", []):
                re.compile(pattern)
            fmt = PromptFormat(
                id=fid,
                name=str(info["name"]),
                source=source,
                stop=[str(s) for s in info.get("stop", [])],
                bos_token=str(info.get("bos_token", "")),
                eos_token=str(info.get("eos_token", "")),
                template_adds_bos=bool(info["bos"]),
                system_role=str(info.get("system_role", "system")),
                upstream=str(info.get("upstream", "")),
                origin="bundled",
                match=[str(p) for p in info.get("match", [])],
            )
        except KeyError as err:
            raise TemplateError(f"{where}: missing key {err.args[0]!r}") from None
        except re.error as err:
            raise TemplateError(f"{where}: bad match pattern: {err}") from None
        if fmt.system_role not in ("system", "user_prefix"):
            raise TemplateError(f"{where}: system_role must be 'system' or 'user_prefix'")
        formats[fid] = fmt
    if directory is None:
        _BUNDLED = formats
    return dict(formats)


def get_format(format_id: str) -> PromptFormat:
    """A bundled format by id."""
    formats = load_bundled_formats()
    try:
        return formats[format_id]
    except KeyError:
        raise TemplateError(f"unknown prompt format '{format_id}'; known: {', '.join(formats)}") from None


def format_from_jinja(
    source: str, bos_token: str, eos_token: str, name: str, stop: list[str] | None = None
) -> PromptFormat:
    """A format from foreign template text (a GGUF's ``tokenizer.chat_template``, a user file).

    Compiled in the sandbox and tried once on a probe conversation, so a broken template fails
    here with one TemplateError line rather than at the first message.
    """
    fmt = PromptFormat(
        id="gguf" if not name else f"custom:{name}",
        name=name or "model's own template",
        source=source,
        stop=list(stop) if stop is not None else ([eos_token] if eos_token else []),
        bos_token=bos_token,
        eos_token=eos_token,
        template_adds_bos=False,
        origin="gguf",
    ).check()
    rendered = None
    last_error = TemplateError(f"{fmt._label}: the template rendered no test conversation")
    for probe in _PROBE_CONVERSATIONS:
        try:
            rendered = fmt.render([dict(m) for m in probe])
            break
        except TemplateRefused as err:  # e.g. "System role not supported": try the next probe
            last_error = err
    if rendered is None:
        raise last_error
    return dataclasses.replace(fmt, template_adds_bos=_starts_with_bos(fmt))


def _renders_like(candidate: PromptFormat, foreign: PromptFormat) -> bool:
    """True when ``candidate`` renders every probe conversation the foreign template accepts
    exactly as it does (with and without a generation prompt), and it accepts at least two."""
    accepted = 0
    for probe in _PROBE_CONVERSATIONS:
        msgs = [dict(m) for m in probe]
        try:
            theirs = (foreign._raw(msgs, True), foreign._raw(msgs, False))
        except TemplateError:
            continue
        try:
            ours = (candidate._raw(msgs, True), candidate._raw(msgs, False))
        except TemplateError:
            return False
        if ours != theirs:
            return False
        accepted += 1
    return accepted >= 2


def _name_match(formats: dict[str, PromptFormat], text: str) -> PromptFormat | None:
    for fmt in formats.values():
        if any(re.search(p, text, re.IGNORECASE) for p in fmt.match):
            return fmt
    return None


def _normalize_ws(text: str) -> str:
    return " ".join(text.split())


def select_format(
    model_name: str,
    gguf_template: str | None,
    override: str | None,
    *,
    bos_token: str = "",
    eos_token: str = "",
) -> tuple[PromptFormat, str]:
    """Choose the format for a model; returns the format and a one-line reason.

    Order: the user's ``override`` (a bundled id, or "gguf" for the model's own template);
    a bundled format that renders exactly like the GGUF template; the GGUF template itself
    (sandboxed); a bundled format whose ``match`` patterns fit the model name; ChatML as a
    guess. ``bos_token``/``eos_token`` are the model's token texts, when known; the returned
    format uses them.
    """
    formats = load_bundled_formats()

    def tokens(fmt: PromptFormat) -> PromptFormat:
        return fmt.with_tokens(bos_token or None, eos_token or None)

    if override:
        if override in ("gguf", "model"):
            if not gguf_template:
                raise TemplateError(
                    f"format override '{override}': the model has no chat template of its own"
                )
            fmt = format_from_jinja(gguf_template, bos_token, eos_token, "")
            return fmt, "chosen by you: the model's own chat template"
        if override not in formats:
            raise TemplateError(f"unknown prompt format '{override}'; known: gguf, {', '.join(formats)}")
        return tokens(formats[override]), f"chosen by you: {formats[override].name}"

    broken = ""
    if gguf_template:
        wanted = _normalize_ws(gguf_template)
        for fmt in formats.values():
            if _normalize_ws(fmt.source) == wanted:
                return tokens(fmt), f"the model's chat template is the bundled {fmt.name} template"
        try:
            # Placeholder token texts when the model's are unknown: both sides get the same.
            foreign = format_from_jinja(gguf_template, bos_token or "<s>", eos_token or "</s>", "")
            own = format_from_jinja(gguf_template, bos_token, eos_token, "")
        except TemplateError as err:
            broken = f" (its own chat template is unusable: {err})"
        else:
            for fmt in formats.values():
                if _renders_like(fmt.with_tokens(foreign.bos_token, foreign.eos_token), foreign):
                    return tokens(
                        fmt
                    ), f"the model's chat template renders like the bundled {fmt.name} format"
            family = _name_match(formats, gguf_template) or _name_match(formats, model_name or "")
            if family is not None:
                own = dataclasses.replace(
                    own, stop=list(dict.fromkeys(family.stop + ([eos_token] if eos_token else [])))
                )
            return own, "using the model's own chat template (sandboxed)"

    if model_name:
        by_name = _name_match(formats, model_name)
        if by_name is not None:
            return tokens(by_name), f"model name '{model_name}' looks like {by_name.name}{broken}"
    if gguf_template:
        return tokens(formats["chatml"]), f"guess: ChatML{broken}"
    return tokens(
        formats["chatml"]
    ), "guess: the model has no chat template and its name matches no known format, so ChatML"
