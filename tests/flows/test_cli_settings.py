"""One source of settings: every flag of the ``sstar`` commands agrees with its field on default and help,
and the flows' pydantic parameter models agree with the dataclasses they are generated from."""

from __future__ import annotations

import argparse
import pickle

import pytest
from pydantic import ValidationError

from flows.cli import build_parser
from flows.commands import settings_from_args
from inversion.config import EvalConfig, TrainConfig
from inversion.fields import Setting, settings_of
from tasks.settings import (
    EVAL_SETTINGS,
    LEARN_SETTINGS,
    PIPELINE_CHECKPOINT_EVERY,
    PIPELINE_STOP,
    RUN_SETTINGS,
    EvalSettings,
    LearnSettings,
    RunSettings,
)

TRAIN = settings_of(TrainConfig)
EVAL = settings_of(EvalConfig)
TRAIN_DEFAULTS = TrainConfig()
EVAL_DEFAULTS = EvalConfig()


def _actions(command: str) -> dict[str, argparse.Action]:
    """The flags of one ``sstar`` command, by destination."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {action.dest: action for action in sub.choices[command]._actions}


def _assert_flag_matches(action: argparse.Action, declared: Setting, default: object, flag: str | None = None) -> None:
    assert action.default == default, f"{action.option_strings}: default {action.default!r} != field's {default!r}"
    shown = default is not None and not isinstance(default, bool)
    help_text = f"{declared.help} (default {default})" if shown else declared.help
    assert action.help == help_text, f"{action.option_strings}: help {action.help!r} != field's {help_text!r}"
    assert (flag or declared.flag) in action.option_strings


# (command, setting, the field's default as the dataclass or pydantic model has it, flag when renamed)
CASES = [
    *[("invert", s, getattr(TRAIN_DEFAULTS, s.name), None) for s in TRAIN.values() if s.spec.group],
    *[
        ("score", s, getattr(EVAL_DEFAULTS, s.name), "--steps" if s.name == "render_steps" else None)
        for s in EVAL.values()
    ],
    ("score", TRAIN["device"], TRAIN_DEFAULTS.device, None),
    ("render", EVAL["render_steps"], EVAL_DEFAULTS.render_steps, "--steps"),
    ("render", EVAL["guidance"], EVAL_DEFAULTS.guidance, None),
    ("render", TRAIN["precision"], TRAIN_DEFAULTS.precision, None),
    ("render", TRAIN["device"], TRAIN_DEFAULTS.device, None),
    *[
        (command, s, LearnSettings.model_fields[s.name].default, None)
        for s in LEARN_SETTINGS
        if not s.required
        for command in ("learn", "serve")
    ],
    *[
        (command, s, EvalSettings.model_fields[s.name].default, None)
        for s in EVAL_SETTINGS
        for command in ("learn", "serve")
    ],
    *[
        (command, s, RunSettings.model_fields[s.name].default, None)
        for s in RUN_SETTINGS
        for command in ("learn", "serve")
    ],
]


@pytest.mark.parametrize("command, declared, default, flag", CASES, ids=[f"{c}-{s.name}" for c, s, _, _ in CASES])
def test_flag_agrees_with_its_field(command, declared, default, flag):
    _assert_flag_matches(_actions(command)[declared.name], declared, default, flag)


def test_every_training_setting_with_a_group_has_a_flag_in_invert_and_learn():
    for name, declared in TRAIN.items():
        for command in ("invert", "learn"):
            assert (name in _actions(command)) == (declared.spec.group is not None), (command, name)


def test_pipeline_checkpoints_by_default_a_lone_inversion_does_not():
    assert TrainConfig().checkpoint_every == 0 == _actions("invert")["checkpoint_every"].default
    assert RunSettings().checkpoint_every == PIPELINE_CHECKPOINT_EVERY == _actions("learn")["checkpoint_every"].default


def test_catalog_runs_stop_at_the_plateau_by_default_a_lone_inversion_runs_to_the_cap():
    assert TrainConfig().stop == "fixed" == _actions("invert")["stop"].default
    assert RunSettings().stop == PIPELINE_STOP == "plateau" == _actions("learn")["stop"].default


@pytest.mark.parametrize("command", ["invert", "learn"])
def test_max_steps_is_the_cap_and_steps_its_old_name(command):
    assert {"--max-steps", "--steps"} <= set(_actions(command)["steps"].option_strings)
    assert LearnSettings(model="m", max_steps=7) == LearnSettings(model="m", steps=7)
    assert LearnSettings(model="m", max_steps=7).model_dump()["steps"] == 7


@pytest.mark.parametrize(
    "model, settings, source",
    [
        (LearnSettings, LEARN_SETTINGS, TrainConfig),
        (EvalSettings, EVAL_SETTINGS, EvalConfig),
        (RunSettings, RUN_SETTINGS, TrainConfig),
    ],
)
def test_parameter_models_are_their_settings(model, settings, source):
    fields = model.model_fields
    assert [s.name for s in settings] == [name for name in fields if name != "prompts"]
    for declared in settings:
        assert fields[declared.name].description == declared.help
        if declared.name in settings_of(source) and declared.name not in ("checkpoint_every", "stop"):
            assert fields[declared.name].default == getattr(source(), declared.name), declared.name
    assert model.__module__ == "tasks.settings"


def test_learn_settings_carry_every_learn_group_training_setting():
    assert set(settings_of(TrainConfig, "learn")) <= set(LearnSettings.model_fields)
    assert set(settings_of(TrainConfig, "run")) <= set(RunSettings.model_fields)
    assert not set(settings_of(TrainConfig, None)) & (set(LearnSettings.model_fields) | set(RunSettings.model_fields))


@pytest.mark.parametrize(
    "model, kwargs, field",
    [
        (LearnSettings, dict(model="m", steps=0), "steps"),
        (LearnSettings, dict(model="m", lr=1.0), "lr"),
        (LearnSettings, dict(model="m", resolution=100), "resolution"),
        (LearnSettings, dict(model="m", precision="fp8"), "precision"),
        (LearnSettings, dict(model="m", vectors=65), "vectors"),
        (LearnSettings, dict(model="m", stpes=3), "stpes"),
        (LearnSettings, dict(), "model"),
        (EvalSettings, dict(samples=0), "samples"),
        (EvalSettings, dict(prompts=["no slot"]), "prompts"),
        (RunSettings, dict(device="gpu"), "device"),
        (RunSettings, dict(device="cuda:0x"), "device"),
        (RunSettings, dict(workers=0), "workers"),
    ],
)
def test_bad_parameters_name_the_field(model, kwargs, field):
    with pytest.raises(ValidationError) as error:
        model(**kwargs)
    assert [e["loc"] for e in error.value.errors()] == [(field,)]


def test_parameter_models_and_dataclasses_accept_the_same_edge_values():
    learn = LearnSettings(model="m", steps=1, lr=0.999, resolution=8, precision="bf16")
    run = RunSettings(device="cuda:1", checkpoint_every=0, compile=True, stop="fixed")
    assert learn.train_config(run) == TrainConfig(
        steps=1, lr=0.999, resolution=8, precision="bf16", device="cuda:1", checkpoint_every=0, compile=True
    )
    assert EvalSettings(samples=64, guidance=0).samples == EvalConfig(samples=64, guidance=0).samples


def test_parameter_models_pickle_and_have_a_form_schema():
    learn = LearnSettings(model="m", steps=7)
    assert pickle.loads(pickle.dumps(learn)) == learn
    schema = RunSettings.model_json_schema()
    assert schema["properties"]["workers"]["maximum"] == 64
    assert schema["properties"]["device"]["description"] == TRAIN["device"].help


def test_learn_flags_build_the_parameter_models(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of {}\n")
    args = build_parser().parse_args(
        [
            "learn",
            "--catalog",
            "c",
            "--out",
            "o",
            "--model",
            "m",
            "--steps",
            "7",
            "--lr-schedule",
            "cosine",
            "--vectors",
            "2",
            "--prompts",
            str(prompts),
            "--render-steps",
            "3",
            "--clip-arch",
            "sstar-tiny-clip",
            "--device",
            "cpu",
            "--compile",
            "--workers",
            "2",
            "--work-dir",
            "w",
            "--checkpoint-every",
            "5",
        ]
    )
    learn, evaluation, run = settings_from_args(args)
    assert learn == LearnSettings(model="m", steps=7, lr_schedule="cosine", vectors=2)
    assert evaluation == EvalSettings(prompts=["a photo of {}"], render_steps=3, clip_arch="sstar-tiny-clip")
    assert run == RunSettings(device="cpu", compile=True, workers=2, work_dir="w", checkpoint_every=5)


def test_a_bad_flag_value_is_one_line_naming_the_setting(capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["learn", "--catalog", "c", "--out", "o", "--model", "m", "--workers", "0"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "sstar learn: error: argument --workers: workers must be in [1, 64], got 0"
    )
