"""Settings declared once (inversion.fields): validation, flags and their errors all come from the declaration."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import pytest

from inversion.config import EvalConfig, TrainConfig
from inversion.errors import ConfigError
from inversion.fields import add_arguments, setting, settings_of, validate, values_from_args


@dataclass(frozen=True)
class Example:
    name: str = setting(help="a required name")
    count: int = setting(3, help="how many", group="learn", ge=1, le=10)
    ratio: float = setting(0.5, help="a share", gt=0, lt=1)
    size: int | None = setting(None, help="a size", ge=8, multiple_of=8)
    mode: Literal["a", "b"] = setting("a", help="a mode", group="run")
    device: str = setting("cpu", help="where", pattern=r"cpu|cuda(:\d+)?")
    loud: bool = setting(False, help="say more")

    def __post_init__(self) -> None:
        validate(self)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="example", exit_on_error=False)
    add_arguments(parser, settings_of(Example).values(), flags={"size": "--px"})
    return parser


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(count=0), r"count must be in \[1, 10\], got 0"),
        (dict(count=11), r"count must be in \[1, 10\], got 11"),
        (dict(count="3"), "count must be an integer, got '3'"),
        (dict(count=True), "count must be an integer, got True"),
        (dict(ratio=1), r"ratio must be in \(0, 1\), got 1"),
        (dict(size=4), "size must be >= 8, got 4"),
        (dict(size=12), "size must be a multiple of 8, got 12"),
        (dict(mode="c"), "mode must be one of a, b, got 'c'"),
        (dict(device="gpu"), "device must match"),
        (dict(device="cuda:x"), "device must match"),
        (dict(loud=1), "loud must be true or false, got 1"),
    ],
)
def test_validation_names_the_field(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Example(name="n", **kwargs)


def test_allowed_values_pass():
    example = Example(name="n", count=10, ratio=1e-9, size=16, mode="b", device="cuda:1", loud=True)
    assert (example.count, example.size, example.device) == (10, 16, "cuda:1")
    assert Example(name="n", ratio=0.25, size=None).size is None


def test_settings_of_keeps_order_and_groups():
    assert list(settings_of(Example)) == ["name", "count", "ratio", "size", "mode", "device", "loud"]
    assert list(settings_of(Example, "learn")) == ["count"]
    assert list(settings_of(Example, None)) == ["name", "ratio", "size", "device", "loud"]
    assert settings_of(Example)["name"].required and not settings_of(Example)["count"].required


def test_flags_parse_check_and_map_back():
    parser = _parser()
    args = parser.parse_args(["--name", "x", "--count", "7", "--px", "24", "--mode", "b", "--loud"])
    values = values_from_args(args, settings_of(Example).values())
    assert values == dict(name="x", count=7, ratio=0.5, size=24, mode="b", device="cpu", loud=True)
    assert Example(**values).size == 24


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--count", "0"], r"argument --count: count must be in \[1, 10\], got 0"),
        (["--count", "x"], "argument --count: count must be an integer, got 'x'"),
        (["--px", "12"], "argument --px: size must be a multiple of 8, got 12"),
        (["--ratio", "half"], "argument --ratio: ratio must be a number, got 'half'"),
        (["--device", "tpu"], "argument --device: device must match"),
    ],
)
def test_bad_flag_values_name_the_setting(argv, message):
    with pytest.raises(argparse.ArgumentError, match=message):
        _parser().parse_args(["--name", "x", *argv])


def test_required_setting_is_a_required_flag(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args([])
    assert "the following arguments are required: --name" in capsys.readouterr().err


def test_help_shows_the_default_once():
    settings = settings_of(Example)
    assert settings["count"].help_text() == "how many (default 3)"
    assert settings["size"].help_text() == "a size"  # None is not worth showing
    assert settings["loud"].help_text() == "say more"


def test_with_default_checks_the_new_default():
    count = settings_of(Example)["count"]
    assert count.with_default(5).default == 5 and count.default == 3
    with pytest.raises(ConfigError, match="count must be in"):
        count.with_default(0)


def test_a_switch_needs_default_false():
    @dataclass(frozen=True)
    class On:
        flip: bool = setting(True, help="flip")

    with pytest.raises(TypeError, match="setting flip: a command-line switch needs default False"):
        add_arguments(argparse.ArgumentParser(), settings_of(On).values())


def test_every_training_and_evaluation_field_is_a_setting():
    """A field added without setting() would have no flag, help or bounds: refuse it here."""
    from dataclasses import fields

    for cls in (TrainConfig, EvalConfig):
        assert [f.name for f in fields(cls)] == list(settings_of(cls)), cls.__name__
        for declared in settings_of(cls).values():
            assert declared.help and declared.help == declared.help.strip(), declared.name
