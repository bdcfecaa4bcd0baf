"""The sampler chain on known distributions and on the real tiny model (SmolLM2).

Checks are made on the candidates the chain leaves (`TokenSampler.filtered_logits`) wherever a
property can be stated exactly, so no test depends on a lucky draw. One model is loaded for the
whole module; prompts are short and generations a dozen tokens at most.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tavern.engines.samplers import (
    DEFAULT_ORDER,
    SamplerSettings,
    TokenSampler,
    apply_top_a,
    last_logits,
    resolve_logit_bias,
    top_a_keep,
)
from tavern.errors import EngineError, PresetError

DATA = Path(__file__).resolve().parents[1] / "data" / "presets"

# A known distribution for the pure-function tests.
PROBS = np.array([0.5, 0.3, 0.15, 0.04, 0.01])


# -- pure functions and settings (no model) ------------------------------------------------------


def test_top_a_drops_tokens_below_top_a_times_p_max_squared() -> None:
    logits = np.log(PROBS)
    # top_a 0.2: threshold 0.2 x 0.5^2 = 0.05 -> 0.04 and 0.01 go.
    out = apply_top_a(logits, 0.2)
    assert np.isfinite(out).tolist() == [True, True, True, False, False]
    assert np.allclose(out[:3], logits[:3])  # survivors keep their logits
    # top_a 1: threshold 0.25 -> only 0.5 and 0.3 stay.
    assert top_a_keep(logits, 1.0).tolist() == [True, True, False, False, False]
    # top_a 0 is off.
    assert top_a_keep(logits, 0.0).all()


def test_top_a_uses_the_probabilities_of_the_tokens_still_in_play() -> None:
    # Token 3 was removed earlier (-inf); the rest renormalise to 0.5/0.25/0.25.
    logits = np.log(np.array([0.2, 0.1, 0.1, 0.6]))
    logits[3] = -np.inf
    # threshold with top_a 1.2: 1.2 x 0.5^2 = 0.3 -> only token 0 stays (with the raw
    # p_max of 0.2 the threshold would be 0.048 and everything would stay).
    assert top_a_keep(logits, 1.2).tolist() == [True, False, False, False]
    # with top_a 0.9: 0.225 -> the 0.25s survive.
    assert top_a_keep(logits, 0.9).tolist() == [True, True, True, False]


def test_top_a_always_keeps_the_most_likely_token() -> None:
    assert top_a_keep(np.log(PROBS), 50.0).tolist() == [True, False, False, False, False]


def test_default_settings_are_neutral() -> None:
    s = SamplerSettings()
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.top_a, s.typical_p) == (1, 0, 1, 0, 0, 1)
    assert not (s.penalties_active or s.dry_active or s.xtc_active or s.is_greedy)
    assert s.seed is None and s.logit_bias == {}
    assert s.dry_sequence_breakers == ["\n", ":", '"', "*"]


def test_settings_round_trip_and_overrides() -> None:
    s = SamplerSettings(temperature=0.7, logit_bias={5: -math.inf}, sampler_order=["min_p"])
    assert SamplerSettings.from_dict(s.model_dump()) == s
    t = s.with_overrides(top_k=40, seed=-1)  # SillyTavern's -1 means "random"
    assert (t.top_k, t.seed, t.temperature) == (40, None, 0.7)
    assert SamplerSettings.from_dict({"logit_bias": {"12": 3}}).logit_bias == {12: 3.0}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"top_p": 1.5}, "top_p"),
        ({"temprature": 0.5}, "temprature"),
        ({"sampler_order": ["top_k", "tfs"]}, "sampler_order"),
        ({"mirostat_mode": 3}, "mirostat_mode"),
    ],
)
def test_bad_settings_raise_one_line_preset_error(change: dict, field: str) -> None:
    with pytest.raises(PresetError) as err:
        SamplerSettings().with_overrides(**change)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_temperature_last_false_moves_temperature_before_truncation() -> None:
    order = SamplerSettings(temperature_last=False).order()
    assert order[:2] == ["penalties", "temperature"]
    assert SamplerSettings().order() == list(DEFAULT_ORDER)
    assert DEFAULT_ORDER[-1] == "temperature"


# -- on the real model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama(model_path: Path):
    from llama_cpp import Llama

    model = Llama(str(model_path), n_ctx=512, n_threads=2, n_batch=512, verbose=False)
    yield model
    model.close()


def tokens(llama, text: str) -> list[int]:
    return llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def chat(llama, user: str) -> list[int]:
    return tokens(llama, f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


def prime(llama, prompt: list[int]) -> np.ndarray:
    """Evaluate a prompt from scratch; return its last logits."""
    llama.reset()
    llama.eval(prompt)
    return last_logits(llama)


def generate(llama, settings: SamplerSettings, prompt: list[int], n: int) -> list[int]:
    prime(llama, prompt)
    out: list[int] = []
    with TokenSampler(llama, settings, prompt) as sampler:
        for _ in range(n):
            token = sampler.sample()
            sampler.accept(token)
            out.append(token)
            llama.eval([token])
    return out


def crafted(n_vocab: int, probs: list[float], first_id: int = 10) -> np.ndarray:
    """Logits for a known distribution over a few ids; every other token is impossible."""
    logits = np.full(n_vocab, -np.inf, dtype=np.float32)
    logits[first_id : first_id + len(probs)] = np.log(np.array(probs))
    return logits


def kept(filtered: np.ndarray) -> list[int]:
    return np.flatnonzero(np.isfinite(filtered)).tolist()


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits.astype(np.float64) - np.max(logits))
    return e / e.sum()


STORY = "Write a short story."


def test_greedy_takes_the_argmax_of_the_logits(llama) -> None:
    prompt = chat(llama, STORY)
    for settings in (SamplerSettings(temperature=0.0), SamplerSettings(greedy=True, seed=3)):
        prime(llama, prompt)
        with TokenSampler(llama, settings, prompt) as sampler:
            assert sampler.steps == ["greedy"]
            for _ in range(6):
                logits = last_logits(llama)
                token = sampler.sample()
                assert token == int(np.argmax(logits))
                sampler.accept(token)
                llama.eval([token])


def test_greedy_ignores_the_seed(llama) -> None:
    prompt = chat(llama, STORY)
    a = generate(llama, SamplerSettings(temperature=0.0, seed=1), prompt, 8)
    b = generate(llama, SamplerSettings(temperature=0.0, seed=2), prompt, 8)
    assert a == b


def test_same_seed_same_tokens_different_seeds_differ(llama) -> None:
    prompt = chat(llama, STORY)
    settings = SamplerSettings(temperature=1.0, seed=1234)
    first = generate(llama, settings, prompt, 10)
    assert generate(llama, settings, prompt, 10) == first
    others = [generate(llama, settings.with_overrides(seed=s), prompt, 10) for s in (1, 2, 3)]
    assert any(o != first for o in others)


def test_no_seed_draws_a_fresh_recorded_one(llama) -> None:
    prime(llama, chat(llama, STORY))
    with TokenSampler(llama, SamplerSettings()) as a, TokenSampler(llama, SamplerSettings()) as b:
        assert isinstance(a.seed, int) and 0 <= a.seed < 0xFFFFFFFF
        assert a.seed != b.seed
    with TokenSampler(llama, SamplerSettings(seed=77)) as c:
        assert c.seed == 77


def test_min_p_cuts_at_min_p_times_p_max(llama) -> None:
    probs = [0.6, 0.25, 0.1, 0.04, 0.01]
    logits = crafted(llama.n_vocab(), probs)
    with TokenSampler(llama, SamplerSettings(min_p=0.1)) as sampler:
        assert sampler.steps == ["min_p", "dist"]
        # p >= 0.1 x 0.6 = 0.06 survives: 0.6, 0.25, 0.1.
        assert kept(sampler.filtered_logits(logits)) == [10, 11, 12]
    with TokenSampler(llama, SamplerSettings(min_p=0.05)) as sampler:
        assert kept(sampler.filtered_logits(logits)) == [10, 11, 12, 13]  # cut at 0.03


def test_top_a_step_in_the_chain_matches_the_pure_function(llama) -> None:
    logits = crafted(llama.n_vocab(), [0.6, 0.25, 0.1, 0.04, 0.01])
    with TokenSampler(llama, SamplerSettings(top_a=0.2)) as sampler:
        assert sampler.steps == ["top_a", "dist"]
        # threshold 0.2 x 0.36 = 0.072
        assert kept(sampler.filtered_logits(logits)) == [10, 11, 12]
    # And on the model's real distribution, token for token.
    raw = prime(llama, chat(llama, STORY))
    with TokenSampler(llama, SamplerSettings(top_a=0.3)) as sampler:
        filtered = sampler.filtered_logits()
        expected = apply_top_a(raw, 0.3)
        assert kept(filtered) == kept(expected)
        assert 1 < len(kept(filtered)) < 50
        assert sampler.sample() in kept(expected)


def test_sampler_order_is_followed(llama) -> None:
    logits = crafted(llama.n_vocab(), [0.6, 0.25, 0.1, 0.04, 0.01])
    # min-p 0.1 keeps 3 tokens; temperature 3 first flattens the distribution so more pass.
    late = SamplerSettings(temperature=3.0, min_p=0.1, top_k=40)
    early = late.with_overrides(sampler_order=["temperature", "min_p"])
    with TokenSampler(llama, late) as sampler:
        assert sampler.steps == ["top_k", "min_p", "temperature", "dist"]
        assert len(kept(sampler.filtered_logits(logits))) == 3
    with TokenSampler(llama, early) as sampler:
        assert sampler.steps == ["temperature", "min_p", "dist"]  # top_k left out: not applied
        assert len(kept(sampler.filtered_logits(logits))) == 5


def test_repetition_penalty_covers_the_prompt(llama) -> None:
    prompt = chat(llama, "Say apple apple apple apple apple apple")
    apple = tokens(llama, " apple")[0]
    assert prompt.count(apple) == 6
    raw = prime(llama, prompt)
    assert raw[apple] > 0
    settings = SamplerSettings(repetition_penalty=1.5, repetition_penalty_range=64)
    with TokenSampler(llama, settings, prompt) as sampler:
        assert sampler.steps == ["penalties", "dist"]
        assert sampler.filtered_logits()[apple] == pytest.approx(raw[apple] / 1.5, rel=1e-5)
    # Without the prompt in the history nothing is penalised (what create_completion does).
    with TokenSampler(llama, settings, []) as sampler:
        assert sampler.filtered_logits()[apple] == pytest.approx(raw[apple])
    # A range that ends before the apples leaves them alone: the chat template's last five
    # tokens follow them.
    assert apple not in prompt[-5:]
    with TokenSampler(llama, settings.with_overrides(repetition_penalty_range=5), prompt) as s:
        assert s.filtered_logits()[apple] == pytest.approx(raw[apple])
    # Range 0 is the whole context.
    with TokenSampler(llama, settings.with_overrides(repetition_penalty_range=0), prompt) as s:
        assert s.filtered_logits()[apple] == pytest.approx(raw[apple] / 1.5, rel=1e-5)


def test_frequency_and_presence_penalties_count_prompt_tokens(llama) -> None:
    prompt = chat(llama, "Say apple apple apple apple apple apple")
    apple = tokens(llama, " apple")[0]
    raw = prime(llama, prompt)
    settings = SamplerSettings(frequency_penalty=0.5, presence_penalty=1.0)
    with TokenSampler(llama, settings, prompt) as sampler:
        assert sampler.filtered_logits()[apple] == pytest.approx(raw[apple] - 6 * 0.5 - 1.0, rel=1e-5)


def test_dry_is_in_the_chain_and_breaks_a_loop(llama) -> None:
    loop = tokens(llama, "one two three four one two three four one two three four one two three")
    four = tokens(llama, " four")[0]
    raw = prime(llama, loop)
    assert int(np.argmax(raw)) == four  # the model wants to continue the loop
    dry = SamplerSettings(dry_multiplier=0.8, dry_base=1.75, dry_allowed_length=2)
    with TokenSampler(llama, dry, loop) as sampler:
        assert sampler.steps == ["dry", "dist"]
        # The match is 14 tokens long: penalty 0.8 x 1.75^(14 - 2), far beyond the logit.
        assert sampler.filtered_logits()[four] < raw[four] - 50
    with TokenSampler(llama, dry.with_overrides(temperature=0.0), loop) as sampler:
        assert sampler.steps == ["dry", "greedy"]
        assert sampler.sample() != four
    with TokenSampler(llama, SamplerSettings(temperature=0.0), loop) as sampler:
        assert sampler.sample() == four


def test_xtc_is_in_the_chain_and_removes_the_top_choices(llama) -> None:
    logits = crafted(llama.n_vocab(), [0.5, 0.3, 0.15, 0.05])
    xtc = SamplerSettings(xtc_probability=1.0, xtc_threshold=0.1, seed=9)
    with TokenSampler(llama, xtc) as sampler:
        assert sampler.steps == ["xtc", "dist"]
        # Above 0.1: 0.5, 0.3, 0.15 -> all but the least likely of them go.
        assert kept(sampler.filtered_logits(logits)) == [12, 13]
    # On the real model: the story's favourite openings are removed.
    raw = prime(llama, chat(llama, STORY))
    probs = softmax(raw)
    above = np.flatnonzero(probs >= 0.1)
    assert len(above) >= 2  # precondition: XTC has something to cut here
    with TokenSampler(llama, xtc) as sampler:
        token = sampler.sample()
        assert token not in above[np.argsort(-probs[above])][:-1].tolist()
    with TokenSampler(llama, SamplerSettings(xtc_probability=0.0, seed=9)) as sampler:
        assert "xtc" not in sampler.steps


def test_forbidden_token_is_never_emitted(llama) -> None:
    prompt = chat(llama, STORY)
    raw = prime(llama, prompt)
    favourites = [int(t) for t in np.argsort(-raw)[:5]]
    settings = SamplerSettings(temperature=1.5, seed=5, logit_bias={t: -math.inf for t in favourites})
    with TokenSampler(llama, settings, prompt) as sampler:
        assert sampler.steps[0] == "logit_bias"
        filtered = sampler.filtered_logits()
        assert all(filtered[t] == -np.inf for t in favourites)
    out = generate(llama, settings, prompt, 12)
    assert not set(out) & set(favourites)


def test_ban_eos_and_text_bias_resolve_with_the_models_tokenizer(llama) -> None:
    apple_space = tokens(llama, " apple")
    apple_plain = tokens(llama, "apple")
    settings = SamplerSettings(
        ban_eos_token=True,
        text_bias={"apple": -5.0, "{apple}": 4.0, "[1, 3]": 2.0},
        logit_bias={3: -1.0, 10**9: 5.0},  # explicit ids win; ids outside the vocab are dropped
    )
    bias = resolve_logit_bias(llama, settings)
    assert bias[llama.token_eos()] == -math.inf
    assert all(bias[t] == -5.0 for t in apple_space)
    assert all(bias[t] == 4.0 for t in apple_plain)
    assert bias[1] == 2.0 and bias[3] == -1.0
    assert 10**9 not in bias


def test_mirostat_replaces_the_truncation_samplers(llama) -> None:
    prompt = chat(llama, STORY)
    settings = SamplerSettings(mirostat_mode=2, top_k=40, min_p=0.1, temperature=0.9, seed=4)
    out = generate(llama, settings, prompt, 4)
    assert len(out) == 4
    prime(llama, prompt)
    with TokenSampler(llama, settings) as sampler:
        assert sampler.steps == ["temperature", "mirostat_v2"]
    with TokenSampler(llama, settings.with_overrides(mirostat_mode=1)) as sampler:
        assert sampler.steps == ["temperature", "mirostat_v1"]


def test_sillytavern_preset_builds_its_chain(llama) -> None:
    from tavern.engines.presets import read_preset

    settings, unsupported = read_preset(DATA / "sillytavern" / "TFS-with-Top-A.json")
    assert unsupported == ["tfs"]
    prime(llama, chat(llama, STORY))
    with TokenSampler(llama, settings) as sampler:
        assert sampler.steps == ["penalties", "top_a", "temperature", "dist"]
        assert isinstance(sampler.sample(), int)


def test_closed_sampler_refuses_to_sample(llama) -> None:
    prime(llama, chat(llama, STORY))
    sampler = TokenSampler(llama, SamplerSettings(top_a=0.1))
    sampler.close()
    sampler.close()  # twice is fine
    with pytest.raises(EngineError):
        sampler.sample()
