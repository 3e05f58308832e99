"""Settings declared once: a dataclass field carries its default, help text and bounds.

A *setting* is a dataclass field made with :func:`setting`. Everything else is derived from that one
declaration:

* validation of the dataclass (:func:`validate`, called from ``__post_init__``), with one-line
  :class:`~inversion.errors.ConfigError` messages naming the field;
* its command-line flag (:func:`add_arguments` / :func:`values_from_args`): ``--name-with-dashes``,
  typed and checked against the same bounds, help text ``"<help> (default X)"``;
* the pydantic parameter models of the flows (``tasks.settings``): same default, description and
  bounds, as pydantic ``Field`` constraints.

Adding a setting is a one-place change: add a field made with :func:`setting` to the dataclass that
owns it (training: :class:`inversion.config.TrainConfig`; evaluation:
:class:`inversion.config.EvalConfig`; pipeline-only: ``tasks.settings``). Its flag, its pydantic
field and its validation follow.

This module knows nothing of pydantic or Prefect; ``tasks`` builds on it, never the reverse.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from inversion.errors import ConfigError

_KEY = "sstar.setting"
_KIND_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}

#: Which parameter model carries a training setting: ``learn`` (what is learned: part of each
#: concept's digest), ``run`` (where and how it runs), or ``None`` (settable from Python only).
Group = Literal["learn", "run"] | None


@dataclass(frozen=True)
class Spec:
    """What a field made with :func:`setting` carries besides its default."""

    help: str
    group: Group = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    multiple_of: int | None = None
    pattern: str | None = None
    aliases: tuple[str, ...] = ()
    digest_at_default: bool = True


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    group: Group = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    multiple_of: int | None = None,
    pattern: str | None = None,
    aliases: tuple[str, ...] = (),
    digest_at_default: bool = True,
) -> Any:
    """A dataclass field declaring one setting (no ``default``: the setting is required).

    ``ge``/``gt``/``le``/``lt`` bound numbers, ``multiple_of`` integers, ``pattern`` (a regular
    expression matched in full) strings; a ``Literal[...]`` type lists the allowed values.
    ``aliases`` are other names the setting answers to: more flags (``--alias-name``, shown first)
    and more keys of the flows' parameter models. ``digest_at_default=False`` keeps a ``learn`` setting
    out of each concept's digest while it holds its default (:func:`digest_values`): a setting added
    later then re-learns no catalog, while any other value does.
    """
    spec = Spec(
        help=help,
        group=group,
        ge=ge,
        gt=gt,
        le=le,
        lt=lt,
        multiple_of=multiple_of,
        pattern=pattern,
        aliases=tuple(aliases),
        digest_at_default=digest_at_default,
    )
    return dataclasses.field(default=default, metadata={_KEY: spec})


@dataclass(frozen=True)
class Setting:
    """One declared setting: its name, resolved type, default and :class:`Spec`."""

    name: str
    annotation: Any
    default: Any
    spec: Spec

    @property
    def help(self) -> str:
        return self.spec.help

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    @property
    def optional(self) -> bool:
        """Whether ``None`` is an allowed value (the type is ``X | None``)."""
        return type(None) in _union_members(self.annotation)

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The allowed values of a ``Literal[...]`` type, else ``None``."""
        (base,) = self._base_types()
        return get_args(base) if get_origin(base) is Literal else None

    @property
    def kind(self) -> type:
        """The plain Python type of a value: ``int``, ``float``, ``str`` or ``bool``."""
        choices = self.choices
        if choices is not None:
            return type(choices[0])
        (base,) = self._base_types()
        if base not in _KIND_WORDS:
            raise TypeError(f"setting {self.name} has unsupported type {self.annotation!r}")
        return base

    @property
    def flag(self) -> str:
        """The default command-line flag: ``--name-with-dashes``."""
        return "--" + self.name.replace("_", "-")

    @property
    def alias_flags(self) -> tuple[str, ...]:
        """The flags of the setting's aliases (``--alias-name``)."""
        return tuple("--" + alias.replace("_", "-") for alias in self.spec.aliases)

    def help_text(self) -> str:
        """The flag's help: the setting's help plus its default, when it has one worth showing."""
        shown = not self.required and self.default is not None and self.kind is not bool
        return f"{self.help} (default {self.default})" if shown else self.help

    def with_default(self, default: Any) -> Setting:
        """The same setting with another default (checked), for a caller whose default differs."""
        self.check(default)
        return dataclasses.replace(self, default=default)

    def check(self, value: Any) -> None:
        """Raise :class:`ConfigError` naming this setting unless ``value`` is allowed."""
        if value is None and self.optional:
            return
        kind = self.kind
        ok_type = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok_type = True
        if not ok_type:
            raise ConfigError(f"{self.name} must be {_KIND_WORDS[kind]}, got {value!r}")
        choices = self.choices
        if choices is not None and value not in choices:
            raise ConfigError(f"{self.name} must be one of {', '.join(map(str, choices))}, got {value!r}")
        s = self.spec
        low, high = (s.ge if s.ge is not None else s.gt), (s.le if s.le is not None else s.lt)
        too_low = (s.ge is not None and value < s.ge) or (s.gt is not None and value <= s.gt)
        too_high = (s.le is not None and value > s.le) or (s.lt is not None and value >= s.lt)
        if too_low or too_high:
            if low is not None and high is not None:
                left, right = ("[" if s.ge is not None else "("), ("]" if s.le is not None else ")")
                bound = f"in {left}{low}, {high}{right}"
            elif low is not None:
                bound = f"{'>=' if s.ge is not None else '>'} {low}"
            else:
                bound = f"{'<=' if s.le is not None else '<'} {high}"
            raise ConfigError(f"{self.name} must be {bound}, got {value!r}")
        if s.multiple_of is not None and value % s.multiple_of:
            raise ConfigError(f"{self.name} must be a multiple of {s.multiple_of}, got {value!r}")
        if s.pattern is not None and not re.fullmatch(s.pattern, value):
            raise ConfigError(f"{self.name} must match {s.pattern}, got {value!r}")

    def _base_types(self) -> tuple[Any, ...]:
        return tuple(t for t in _union_members(self.annotation) if t is not type(None))


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def settings_of(cls: type, group: Group | Literal["any"] = "any") -> dict[str, Setting]:
    """The settings a dataclass declares with :func:`setting`, by name, in declaration order.

    ``group`` keeps only the settings of that group (``"any"``: all of them).
    """
    hints = typing.get_type_hints(cls)
    found = {}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_KEY)
        if spec is not None and (group == "any" or spec.group == group):
            found[f.name] = Setting(f.name, hints[f.name], f.default, spec)
    return found


def digest_values(settings: Iterable[Setting], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (by setting name) as a digest input: without the settings declared
    ``digest_at_default=False`` that hold their default."""
    skipped = {s.name for s in settings if not s.spec.digest_at_default and values.get(s.name) == s.default}
    return {name: value for name, value in values.items() if name not in skipped}


def validate(obj: Any) -> None:
    """Check every declared setting of a dataclass instance (call it from ``__post_init__``)."""
    for name, declared in settings_of(type(obj)).items():
        declared.check(getattr(obj, name))


def add_arguments(
    parser: argparse.ArgumentParser, settings: Iterable[Setting], *, flags: Mapping[str, str] | None = None
) -> None:
    """Add one flag per setting: ``--name-with-dashes`` (or ``flags[name]``), its dest the setting's name.

    Values are converted and checked like the dataclass checks them, so a bad one is an argparse
    error naming the setting. A ``bool`` setting (default ``False``) becomes a switch.
    """
    for declared in settings:
        names = (*declared.alias_flags, (flags or {}).get(declared.name, declared.flag))
        help_text = declared.help_text().replace("%", "%%")
        if declared.kind is bool:
            if declared.default is not False:
                raise TypeError(f"setting {declared.name}: a command-line switch needs default False")
            parser.add_argument(*names, dest=declared.name, action="store_true", help=help_text)
            continue
        parser.add_argument(
            *names,
            dest=declared.name,
            type=_converter(declared),
            choices=declared.choices,
            required=declared.required,
            default=None if declared.required else declared.default,
            help=help_text,
        )


def values_from_args(args: argparse.Namespace, settings: Iterable[Setting]) -> dict[str, Any]:
    """The parsed values of the flags :func:`add_arguments` added, by setting name."""
    return {declared.name: getattr(args, declared.name) for declared in settings}


def _converter(declared: Setting) -> Callable[[str], Any]:
    kind = declared.kind

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{declared.name} must be {_KIND_WORDS[kind]}, got {text!r}") from None
        try:
            declared.check(value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    convert.__name__ = kind.__name__
    return convert
