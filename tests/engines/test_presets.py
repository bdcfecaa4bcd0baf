"""Sampler presets: the bundled ones, real SillyTavern files, reporting, errors, saving."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tavern.engines.presets import (
    BUNDLED_NAMES,
    PresetNotFoundError,
    import_st_preset,
    list_presets,
    load_preset,
    read_preset,
    save_preset,
    to_st_preset,
)
from tavern.engines.samplers import SamplerSettings
from tavern.errors import NotFoundError, PresetError

ST = Path(__file__).resolve().parents[1] / "data" / "presets" / "sillytavern"


# -- bundled -------------------------------------------------------------------------------------


def test_bundled_presets_are_listed_and_load_by_any_case() -> None:
    names = list_presets()
    assert set(BUNDLED_NAMES) <= set(names)
    for name in BUNDLED_NAMES:
        assert load_preset(name.lower()) == load_preset(name.upper()) == load_preset(name)


def test_bundled_presets_are_sillytavern_files_tavern_fully_honours() -> None:
    from tavern.engines.presets import bundled_presets_dir

    for name in BUNDLED_NAMES:
        obj = json.loads((bundled_presets_dir() / f"{name}.json").read_text(encoding="utf-8"))
        assert {"temp", "top_p", "rep_pen", "rep_pen_range", "sampler_order"} <= set(obj)
        _, unsupported = import_st_preset(obj, name)
        assert unsupported == []


def test_bundled_presets_say_what_their_names_promise() -> None:
    default = load_preset("Default")
    assert 0.5 <= default.temperature <= 1.0 and default.min_p > 0
    assert default.penalties_active and default.repetition_penalty_range > 0
    creative = load_preset("Creative")
    assert creative.temperature > default.temperature
    assert creative.dry_active and creative.xtc_active
    deterministic = load_preset("Deterministic")
    assert deterministic.is_greedy and deterministic.top_k == 1


def test_a_user_preset_shadows_a_bundled_one(tmp_path: Path) -> None:
    save_preset(SamplerSettings(temperature=0.3), tmp_path / "default.json")
    assert load_preset("Default", user_dir=tmp_path).temperature == 0.3
    names = list_presets(user_dir=tmp_path)
    assert [n.casefold() for n in names].count("default") == 1
    assert "Creative" in names


def test_unknown_name_is_a_not_found_preset_error(tmp_path: Path) -> None:
    with pytest.raises(PresetNotFoundError) as err:
        load_preset("Nonexistent")
    assert isinstance(err.value, PresetError) and isinstance(err.value, NotFoundError)
    assert "Default" in str(err.value)  # it lists what is there
    with pytest.raises(PresetError, match="does not exist"):
        load_preset(tmp_path / "missing.json")


# -- SillyTavern's own files ---------------------------------------------------------------------


def test_sillytavern_default_preset_maps_its_keys() -> None:
    s, unsupported = read_preset(ST / "Default.json")
    assert unsupported == []
    assert (s.temperature, s.top_p, s.top_k, s.min_p) == (0.7, 0.5, 40, 0.0)
    assert (s.repetition_penalty, s.repetition_penalty_range) == (1.2, 0)
    assert s.dry_sequence_breakers == ["\n", ":", '"', "*"]  # a JSON string in the file
    assert s.seed is None and not s.dry_active and not s.xtc_active
    # KoboldCpp's order 6,0,1,3,4,2,5: penalties first, temperature last, tail-free dropped.
    assert s.sampler_order[0] == "penalties"
    assert s.sampler_order.index("temperature") > s.sampler_order.index("min_p")


def test_sillytavern_top_a_preset_reports_tail_free_sampling() -> None:
    s, unsupported = read_preset(ST / "TFS-with-Top-A.json")
    assert s.top_a == 0.2 and s.repetition_penalty == 1.15
    assert unsupported == ["tfs"]


def test_sillytavern_temperature_first_preset_keeps_its_order() -> None:
    s, unsupported = read_preset(ST / "Universal-Creative.json")
    assert unsupported == []
    assert (s.temperature, s.min_p, s.temperature_last) == (1.5, 0.1, False)
    assert s.sampler_order[0] == "temperature"


def test_keys_tavern_cannot_honour_are_reported_only_when_set() -> None:
    base = json.loads((ST / "Default.json").read_text(encoding="utf-8"))
    changed = {
        **base,
        "smoothing_factor": 0.3,
        "guidance_scale": 1.5,
        "negative_prompt": "be nice",
        "grammar_string": 'root ::= "yes"',
        "no_repeat_ngram_size": 3,
        "epsilon_cutoff": 3,
        "rep_pen_slope": 0.7,
        "tfs": 1,  # neutral: not reported
        "dynatemp": True,  # honoured: not reported
        "some_future_sampler": 2,  # unknown and set
        "another_future_key": 0,  # unknown but empty
    }
    s, unsupported = import_st_preset(changed, "custom")
    assert unsupported == sorted(
        [
            "smoothing_factor",
            "guidance_scale",
            "negative_prompt",
            "grammar_string",
            "no_repeat_ngram_size",
            "epsilon_cutoff",
            "rep_pen_slope",
            "some_future_sampler",
        ]
    )
    # dynatemp 0..2 (SillyTavern's defaults): temperature 1 +- 1, as KoboldCpp receives it.
    assert (s.temperature, s.dynatemp_range) == (1.0, 1.0)


def test_logit_bias_and_banned_tokens_map_to_biases() -> None:
    obj = {
        "logit_bias": [
            {"id": "a", "text": "[5, 6]", "value": -100},
            {"id": "b", "text": "hello", "value": 2},
            {"id": "c", "text": "{verbatim}", "value": "-3"},
            {"id": "d", "text": "", "value": 50},  # empty: skipped, as in SillyTavern
        ],
        "banned_tokens": '[7]\nfoo\n"bar baz"\n',
        "ban_eos_token": True,
        "seed": 1234,
        "do_sample": False,
    }
    s, unsupported = import_st_preset(obj, "bias")
    assert s.logit_bias == {5: -100.0, 6: -100.0, 7: -math.inf}
    assert s.text_bias == {"hello": 2.0, "{verbatim}": -3.0, "{foo}": -math.inf}
    assert s.ban_eos_token and s.seed == 1234 and s.greedy
    assert unsupported == ["banned_tokens"]  # the quoted line is a banned string


def test_mirostat_dry_and_xtc_keys() -> None:
    obj = {
        "mirostat_mode": 2,
        "mirostat_tau": 4,
        "mirostat_eta": 0.2,
        "dry_multiplier": 0.8,
        "dry_base": 1.5,
        "dry_allowed_length": 3,
        "dry_penalty_last_n": -1,
        "dry_sequence_breakers": '"\\n", ":"',  # the UI's bare comma-separated form
        "xtc_threshold": 0.15,
        "xtc_probability": 0.5,
        "nsigma": 1.2,
    }
    s, _ = import_st_preset(obj, "loops")
    assert (s.mirostat_mode, s.mirostat_tau, s.mirostat_eta) == (2, 4.0, 0.2)
    assert (s.dry_multiplier, s.dry_base, s.dry_allowed_length, s.dry_penalty_last_n) == (
        0.8,
        1.5,
        3,
        -1,
    )
    assert s.dry_sequence_breakers == ["\n", ":"]
    assert (s.xtc_threshold, s.xtc_probability, s.top_n_sigma) == (0.15, 0.5, 1.2)


# -- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, needle",
    [
        (b'{"temp": 0.7,', "invalid JSON at line 1"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"temp": "hot"}', "temp"),
        (b'{"top_p": 5}', "top_p"),
        (b'{"top_k": 2.5}', "top_k"),
        (b'{"dry_sequence_breakers": "not json"}', "dry_sequence_breakers"),
        (b'{"sampler_order": [9, 0]}', "sampler_order"),
        (b'{"logit_bias": "yes"}', "logit_bias"),
        (b'{"logit_bias": [{"text": "[1, x]", "value": 1}]}', "logit_bias"),
        (b'{"ban_eos_token": "maybe"}', "ban_eos_token"),
        (b"\xff\xfe{not utf-8}", "not UTF-8"),
    ],
)
def test_malformed_presets_raise_one_line_preset_error(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(PresetError) as err:
        load_preset(path)
    message = str(err.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_bom_and_string_numbers_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b'\xef\xbb\xbf{"temp": "0.9", "top_k": "20", "temperature_last": "false"}\r\n')
    s = load_preset(path)
    assert (s.temperature, s.top_k, s.temperature_last) == (0.9, 20, False)


# -- saving --------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    settings = SamplerSettings(
        temperature=0.85,
        dynatemp_range=0.25,
        top_k=30,
        top_p=0.95,
        min_p=0.02,
        top_a=0.1,
        typical_p=0.9,
        top_n_sigma=1.5,
        repetition_penalty=1.08,
        repetition_penalty_range=512,
        frequency_penalty=0.1,
        presence_penalty=0.2,
        dry_multiplier=0.8,
        dry_penalty_last_n=1024,
        dry_sequence_breakers=["\n", "{{char}}:"],
        xtc_threshold=0.12,
        xtc_probability=0.4,
        logit_bias={42: 3.0},
        text_bias={"hello": -2.0},
        ban_eos_token=True,
        seed=99,
        sampler_order=["penalties", "temperature", "top_k", "min_p", "top_a"],
    )
    path = save_preset(settings, tmp_path / "mine.json")
    assert load_preset(path) == settings
    assert load_preset("mine", user_dir=tmp_path) == settings
    assert [p.name for p in tmp_path.iterdir()] == ["mine.json"]  # no temp file left behind


def test_saved_preset_is_sillytavern_shaped(tmp_path: Path) -> None:
    path = save_preset(SamplerSettings(logit_bias={3: -math.inf}, greedy=True), tmp_path / "ban")
    assert path.name == "ban.json"
    obj = json.loads(path.read_text(encoding="utf-8"))
    reference = json.loads((ST / "Default.json").read_text(encoding="utf-8"))
    assert set(reference) - set(obj) <= {"rep_pen_size"}
    assert obj["logit_bias"] == [{"id": "tavern-0", "text": "[3]", "value": -100.0}]
    assert obj["do_sample"] is False and obj["seed"] == -1
    assert obj["sampler_order"] == [6, 0, 1, 3, 4, 2, 5]
    assert to_st_preset(SamplerSettings())["tavern_sampler_order"] is None


def test_save_over_an_existing_preset_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    save_preset(SamplerSettings(temperature=0.5), path)
    save_preset(SamplerSettings(temperature=0.6), path)
    assert load_preset(path).temperature == 0.6


def test_save_to_an_impossible_place_is_a_preset_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(PresetError, match="cannot write"):
        save_preset(SamplerSettings(), blocker / "p.json")
    assert blocker.read_text(encoding="utf-8") == "not a folder"
