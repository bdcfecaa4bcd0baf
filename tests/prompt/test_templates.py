"""Bundled instruct formats: byte-for-byte agreement with the upstream chat templates, the
continue/prefill renders, the message-by-message identity, and format selection."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.ext import loopcontrols

from tavern.errors import TemplateError
from tavern.prompt.st_presets import context_preset_to_story_template, instruct_preset_to_format
from tavern.prompt.templates import (
    PromptFormat,
    format_from_jinja,
    get_format,
    load_bundled_formats,
    select_format,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "templates"
# The conversations every bundled format is checked on; their names say what each exercises.
CONVERSATIONS: dict[str, list[dict[str, str]]] = json.loads(
    (DATA / "conversations.json").read_text(encoding="utf-8")
)
REFERENCE_NOW = datetime(2025, 3, 14, 9, 26, 53)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def reference_render(
    source: str, messages: list[dict[str, Any]], add_generation_prompt: bool, bos_token: str, eos_token: str
) -> str:
    """Render with a plain (unsandboxed) Jinja environment set up as transformers does."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: REFERENCE_NOW.strftime(fmt)
    return env.from_string(source).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )


def upstream_source(name: str) -> str:
    return (DATA / f"{name}.upstream.jinja").read_text(encoding="utf-8")


ALL_IDS = list(load_bundled_formats())

NO_SYSTEM = ["user_only", "trailing_assistant", "empty_content", "padded_whitespace"]
WITH_SYSTEM = ["system_user", "system_multi_turn", "unicode", "system_trailing_assistant"]
# Upstream Mistral v2/v3 templates move the system prompt to the LAST user turn (and drop it when
# the chat ends with a reply); ours keep it in the first user turn, so they agree when the system
# prompt meets the only user turn.
ONE_USER_TURN_WITH_SYSTEM = ["system_user"]

# format id -> [(upstream file, conversations on which our rendering must equal it)]
UPSTREAM_CASES: dict[str, list[tuple[str, list[str]]]] = {
    "chatml": [("chatml", NO_SYSTEM + WITH_SYSTEM)],
    "llama2": [("llama2", NO_SYSTEM + WITH_SYSTEM)],
    "llama3": [("llama3", NO_SYSTEM + WITH_SYSTEM)],
    # Mixtral-8x7B / Mistral-7B v0.2 refuse a system role.
    "mistral-v1": [("mistral-v1", NO_SYSTEM)],
    "mistral-v3": [("mistral-v3", NO_SYSTEM + ONE_USER_TURN_WITH_SYSTEM)],
    "mistral-v3-tekken": [("mistral-v3-tekken", NO_SYSTEM + ONE_USER_TURN_WITH_SYSTEM)],
    # Without a system message upstream writes its own dated default prompt.
    "mistral-v7-tekken": [("mistral-v7-tekken", WITH_SYSTEM)],
    # Gemma 2 refuses a system role; Gemma 3 folds it into the first user turn like ours.
    "gemma": [("gemma", NO_SYSTEM + WITH_SYSTEM), ("gemma-2", NO_SYSTEM)],
    "phi3": [("phi3", NO_SYSTEM + WITH_SYSTEM)],
    "command-r": [("command-r", NO_SYSTEM + WITH_SYSTEM)],
    "deepseek": [("deepseek", NO_SYSTEM + WITH_SYSTEM)],
}

ST_REFERENCE = {"alpaca": "Alpaca", "vicuna": "Vicuna 1.1", "metharme": "Metharme", "story": "Story"}

UPSTREAM_PARAMS = [
    pytest.param(fid, upstream, conv, id=f"{fid}-{upstream}-{conv}")
    for fid, cases in UPSTREAM_CASES.items()
    for upstream, convs in cases
    for conv in convs
]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize(("fid", "upstream", "conv"), UPSTREAM_PARAMS)
def test_bundled_format_equals_upstream_template(
    fid: str, upstream: str, conv: str, add_generation_prompt: bool
) -> None:
    fmt = get_format(fid)
    messages = CONVERSATIONS[conv]
    expected = reference_render(
        upstream_source(upstream), messages, add_generation_prompt, fmt.bos_token, fmt.eos_token
    )
    assert fmt.render(messages, add_generation_prompt=add_generation_prompt) == expected


def test_every_format_has_a_reference_or_says_why() -> None:
    covered = set(UPSTREAM_CASES) | set(ST_REFERENCE) | {"smollm2"}
    assert covered == set(ALL_IDS)
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for fid in ALL_IDS:
        assert f"`{fid}`" in readme, f"{fid} has no provenance line in tests/data/templates/README.md"


def _st_instruct(name: str) -> PromptFormat:
    preset = json.loads((DATA / "st" / f"instruct-{name}.json").read_text(encoding="utf-8"))
    return instruct_preset_to_format(preset, name)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("fid", sorted(ST_REFERENCE))
def test_plain_formats_equal_sillytavern_presets(fid: str, add_generation_prompt: bool) -> None:
    fmt, st = get_format(fid), _st_instruct(ST_REFERENCE[fid])
    conversations = dict(CONVERSATIONS)
    conversations["mid_chat_system"] = CONVERSATIONS["system_multi_turn"] + [
        {"role": "system", "content": "[Author's note: rain]"},
        {"role": "user", "content": "Go on"},
    ]
    for name, messages in conversations.items():
        assert fmt.render(messages, add_generation_prompt) == st.render(messages, add_generation_prompt), name


def test_sillytavern_chatml_pair_reproduces_bundled_chatml() -> None:
    # SillyTavern 1.12 puts ChatML's system wrapper in the context preset's story string.
    context = json.loads((DATA / "st" / "context-ChatML.json").read_text(encoding="utf-8"))
    story = context_preset_to_story_template(context)
    st = _st_instruct("ChatML")
    for name in WITH_SYSTEM:
        messages = [dict(m) for m in CONVERSATIONS[name]]
        ours = get_format("chatml").render(messages)
        messages[0]["content"] = story.render({"system": messages[0]["content"]})
        assert st.render(messages) == ours, name


# -- SmolLM2, the default model -----------------------------------------------------------------


def test_smollm2_gguf_template_is_bundled_verbatim(smollm2_gguf: dict[str, str]) -> None:
    fmt = get_format("smollm2")
    assert fmt.source == smollm2_gguf["template"]
    assert (smollm2_gguf["bos_token"], smollm2_gguf["eos_token"]) == (fmt.bos_token, fmt.eos_token)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("conv", list(CONVERSATIONS))
def test_smollm2_renders_like_its_gguf_template(
    smollm2_gguf: dict[str, str], conv: str, add_generation_prompt: bool
) -> None:
    messages = CONVERSATIONS[conv]
    expected = reference_render(
        smollm2_gguf["template"],
        messages,
        add_generation_prompt,
        smollm2_gguf["bos_token"],
        smollm2_gguf["eos_token"],
    )
    fmt, _reason = select_format(
        "SmolLM2-135M-Instruct",
        smollm2_gguf["template"],
        None,
        bos_token=smollm2_gguf["bos_token"],
        eos_token=smollm2_gguf["eos_token"],
    )
    assert fmt.id == "smollm2"
    assert fmt.render(messages, add_generation_prompt) == expected
    if messages[0]["role"] == "system":  # plain ChatML differs only by SmolLM2's default system line
        assert get_format("chatml").render(messages, add_generation_prompt) == expected
    else:
        assert expected.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_smollm2_selected_from_its_gguf(smollm2_gguf: dict[str, str]) -> None:
    fmt, reason = select_format(smollm2_gguf["name"], smollm2_gguf["template"], None)
    assert fmt.id == "smollm2"
    assert "SmolLM2" in reason


# -- continue, prefill, impersonation -------------------------------------------------------------

ALL_FORMATS = [pytest.param(fid, id=fid) for fid in ALL_IDS] + [
    pytest.param("st:ChatML-Names", id="st-ChatML-Names")
]


def _format(fid: str) -> PromptFormat:
    return _st_instruct("ChatML-Names") if fid == "st:ChatML-Names" else get_format(fid)


@pytest.mark.parametrize("fid", ALL_FORMATS)
@pytest.mark.parametrize("with_system", [True, False], ids=["system", "no-system"])
def test_continue_final_leaves_the_last_reply_open(fid: str, with_system: bool) -> None:
    fmt = _format(fid)
    messages = ([{"role": "system", "content": "Narrate."}] if with_system else []) + [
        {"role": "user", "content": "Begin."},
        {"role": "assistant", "content": "Once upon a"},
    ]
    out = fmt.render(messages, continue_final=True)
    closed = fmt.render(messages, add_generation_prompt=False)
    assert out.endswith("Once upon a")
    assert closed.startswith(out)
    assert "Once upon a" not in closed[len(out) :]
    # Trailing space is kept even by templates that trim content: the model continues after it.
    padded = fmt.render(
        messages[:-1] + [{"role": "assistant", "content": "Once upon a "}], continue_final=True
    )
    assert padded == out + " "


@pytest.mark.parametrize("fid", ALL_FORMATS)
def test_prefill_starts_the_reply_as_history_would_show_it(fid: str) -> None:
    fmt = _format(fid)
    messages = [{"role": "system", "content": "Narrate."}, {"role": "user", "content": "Who's there?"}]
    out = fmt.render(messages, prefill="Mira:")
    assert out.endswith("Mira:")
    assert out.startswith(fmt.render(messages))  # the generation prompt, perhaps plus a space
    with_reply = fmt.render(
        messages + [{"role": "assistant", "content": "Mira: It's me."}], add_generation_prompt=False
    )
    assert with_reply.startswith(out)


@pytest.mark.parametrize("fid", ALL_FORMATS)
def test_impersonation_opens_a_user_turn(fid: str) -> None:
    fmt = _format(fid)
    messages = [
        {"role": "system", "content": "Narrate."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, traveller."},
    ]
    out = fmt.render(messages, gen_role="user", prefill="Ann:")
    assert out.endswith("Ann:")
    with_turn = fmt.render(
        messages + [{"role": "user", "content": "Ann: thanks"}], add_generation_prompt=False
    )
    assert with_turn.startswith(out)


def test_prefill_examples() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    assert get_format("chatml").render(messages, prefill="Mira:") == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nMira:"
    )
    # Mistral writes replies after a space; the prefill lands after it, as the reply would.
    assert get_format("mistral-v3").render(messages, prefill="Mira:") == "<s>[INST] Hi[/INST] Mira:"
    assert get_format("story").render(messages, prefill="Mira:") == "Hi\nMira:"
    assert get_format("llama3").render(messages, continue_final=True) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi"
    )


def test_continue_needs_a_message() -> None:
    with pytest.raises(TemplateError, match="no message to continue"):
        get_format("chatml").render([], continue_final=True)


# -- message-by-message identity ------------------------------------------------------------------

EXPECTED_CONCATENATIVE = {
    "chatml": True,
    "smollm2": True,
    "llama3": True,
    "mistral-v7-tekken": True,
    "phi3": True,
    "command-r": True,
    "deepseek": True,
    "alpaca": True,
    "vicuna": True,
    "metharme": True,
    "story": True,
    "llama2": False,
    "mistral-v1": False,
    "mistral-v3": False,
    "mistral-v3-tekken": False,
    "gemma": False,
}


@pytest.mark.parametrize("fid", ALL_IDS)
def test_is_concatenative(fid: str) -> None:
    fmt = get_format(fid)
    assert fmt.is_concatenative is EXPECTED_CONCATENATIVE[fid]
    if not fmt.is_concatenative:
        return
    gen = fmt.generation_prompt()
    for name, messages in CONVERSATIONS.items():
        built = fmt.prefix + fmt.render_message(messages[0], first=True)
        built += "".join(fmt.render_message(m) for m in messages[1:]) + gen
        assert built == fmt.render(messages), name


def test_pieces_examples() -> None:
    llama3 = get_format("llama3")
    assert llama3.prefix == "<|begin_of_text|>"
    assert llama3.render_message({"role": "user", "content": " Hi "}) == (
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    )
    assert llama3.generation_prompt() == "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert llama3.generation_prompt("user") == "<|start_header_id|>user<|end_header_id|>\n\n"
    phi3 = get_format("phi3")  # its history ends with eos only when no generation prompt follows
    assert phi3.render_message({"role": "assistant", "content": "ok"}) == "<|assistant|>\nok<|end|>\n"
    deepseek = get_format("deepseek")
    assert deepseek.render_message({"role": "system", "content": "Be brief."}, first=True) == "Be brief."
    assert deepseek.render_message({"role": "assistant", "content": "<think>hmm</think>Yes."}) == (
        "<｜Assistant｜>Yes.<｜end▁of▁sentence｜>"
    )


def test_mid_chat_system_messages_are_rendered() -> None:
    # The assembler injects author's notes as system messages at depth; every format shows them.
    messages = CONVERSATIONS["system_multi_turn"] + [
        {"role": "system", "content": "NOTE-42"},
        {"role": "user", "content": "Go on"},
    ]
    for fid in ALL_IDS:
        assert get_format(fid).render(messages).count("NOTE-42") == 1, fid


# -- loading and selection --------------------------------------------------------------------------


def test_bundled_metadata() -> None:
    formats = load_bundled_formats()
    assert {
        "chatml",
        "llama2",
        "llama3",
        "mistral-v1",
        "mistral-v3",
        "mistral-v3-tekken",
        "mistral-v7-tekken",
        "alpaca",
        "vicuna",
        "gemma",
        "phi3",
        "command-r",
        "metharme",
        "deepseek",
        "story",
        "smollm2",
    } <= set(formats)
    for fmt in formats.values():
        assert fmt.upstream and fmt.name
        assert fmt.system_role in ("system", "user_prefix")
        # template_adds_bos is exactly "the template writes bos_token"
        rendered = fmt.render([{"role": "user", "content": "x"}])
        assert fmt.template_adds_bos == (bool(fmt.bos_token) and rendered.startswith(fmt.bos_token)), fmt.id
    assert get_format("llama3").template_adds_bos and not get_format("chatml").template_adds_bos


def test_unknown_format_id() -> None:
    with pytest.raises(TemplateError, match="unknown prompt format 'nope'"):
        get_format("nope")


@pytest.mark.parametrize(
    ("model", "fid"),
    [
        ("Meta-Llama-3-8B-Instruct.Q4_K_M.gguf", "llama3"),
        ("mistral-7b-instruct-v0.2", "mistral-v1"),
        ("Mistral-7B-Instruct-v0.3.Q5_K_M.gguf", "mistral-v3"),
        ("Mistral-Nemo-Instruct-2407-Q6_K.gguf", "mistral-v3-tekken"),
        ("Mistral-Small-24B-Instruct-2501-Q4_K_M.gguf", "mistral-v7-tekken"),
        ("gemma-2-9b-it", "gemma"),
        ("gemma-3-4b-it-Q4_K_M.gguf", "gemma"),
        ("Phi-3-mini", "phi3"),
        ("SmolLM2-135M-Instruct", "smollm2"),
        ("DeepSeek-R1-Distill-Llama-8B-Q4_K_M.gguf", "deepseek"),
        ("c4ai-command-r-v01-Q4_K_M.gguf", "command-r"),
        ("llama-2-13b-chat.Q4_K_M.gguf", "llama2"),
        ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", "chatml"),
        ("pygmalion-2-13b.Q4_K_M.gguf", "metharme"),
        ("vicuna-13b-v1.5.Q4_K_M.gguf", "vicuna"),
    ],
)
def test_select_by_model_name(model: str, fid: str) -> None:
    fmt, reason = select_format(model, None, None)
    assert fmt.id == fid
    assert model in reason and fmt.name in reason


def test_select_unknown_model_guesses_chatml() -> None:
    fmt, reason = select_format("my-own-finetune-7b.gguf", None, None)
    assert fmt.id == "chatml" and "guess" in reason


def test_select_override() -> None:
    fmt, reason = select_format("Meta-Llama-3-8B-Instruct", upstream_source("llama3"), "alpaca")
    assert fmt.id == "alpaca" and "chosen by you" in reason
    fmt, reason = select_format("x", upstream_source("mistral-v3"), "gguf")
    assert fmt.origin == "gguf" and "own chat template" in reason
    with pytest.raises(TemplateError, match="unknown prompt format 'vicuna2'"):
        select_format("x", None, "vicuna2")
    with pytest.raises(TemplateError, match="no chat template"):
        select_format("x", None, "gguf")


@pytest.mark.parametrize(
    ("upstream", "fid"),
    [
        ("chatml", "chatml"),
        ("llama3", "llama3"),
        ("gemma-2", "gemma"),
        ("phi3", "phi3"),
        ("command-r", "command-r"),
        ("llama2", "llama2"),
    ],
)
def test_select_gguf_template_that_renders_like_a_bundled_one(upstream: str, fid: str) -> None:
    fmt, reason = select_format(
        "some-model.gguf", upstream_source(upstream), None, bos_token="<B>", eos_token="<E>"
    )
    assert fmt.id == fid and "renders like" in reason
    assert (fmt.bos_token, fmt.eos_token) == ("<B>", "<E>")


def test_select_gguf_template_used_as_is_when_no_bundled_one_matches() -> None:
    # Mistral v0.3's own template moves the system prompt; no bundled format renders like it.
    source = upstream_source("mistral-v3")
    fmt, reason = select_format("Mistral-7B-Instruct-v0.3", source, None, bos_token="<s>", eos_token="</s>")
    assert fmt.origin == "gguf" and "own chat template" in reason
    assert fmt.template_adds_bos
    assert "[INST]" in fmt.stop  # stop strings come from the matching family
    messages = CONVERSATIONS["system_multi_turn"]
    assert (
        fmt.render(messages)
        == "<s>[INST] Hello[/INST] Hi there</s>[INST] You are a helpful assistant\n\nWho are you[/INST]"
    )


def test_select_falls_back_when_the_gguf_template_is_broken() -> None:
    fmt, reason = select_format("gemma-2-2b-it", "{% for m in messages %}{{ m.content ", None)
    assert fmt.id == "gemma"
    assert "unusable" in reason and "syntax error" in reason


def test_format_from_jinja() -> None:
    fmt = format_from_jinja(upstream_source("llama3"), "<|begin_of_text|>", "<|eot_id|>", "llama3-file")
    assert fmt.template_adds_bos and fmt.stop == ["<|eot_id|>"]
    assert fmt.render([{"role": "user", "content": "Hi"}]) == get_format("llama3").render(
        [{"role": "user", "content": "Hi"}]
    )
    assert not format_from_jinja(upstream_source("chatml"), "<s>", "</s>", "x").template_adds_bos
    with pytest.raises(TemplateError, match="refused the conversation"):
        format_from_jinja("{{ raise_exception('no chats here') }}", "", "", "refuser")


@pytest.mark.parametrize(
    "bad",
    [
        "not a list",
        [{"role": "narrator", "content": "x"}],
        [{"role": "user", "content": 5}],
        ["just text"],
    ],
)
def test_bad_messages(bad: object) -> None:
    with pytest.raises(TemplateError):
        get_format("chatml").render(bad)  # type: ignore[arg-type]
