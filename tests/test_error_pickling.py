"""Every exception class of inversion/ and storage/ survives pickling with its message and fields.

Prefect stores task failures and process pools send them between processes, both by pickling.
The classes are found by walking the packages, so a new error class is covered without editing this.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import typing

import pytest

PACKAGES = ("inversion", "storage")
_SAMPLES: dict[object, object] = {str: "bad-input.png", int: 7, float: 0.5, bool: True}


def _error_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names = [package_name] + [m.name for m in pkgutil.walk_packages(package.__path__, package_name + ".")]
        for name in names:
            module = importlib.import_module(name)
            for value in vars(module).values():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__.split(".")[0] in PACKAGES
                ):
                    found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[key] for key in sorted(found)]


ERRORS = _error_classes()


def _instance(cls: type[BaseException]) -> BaseException:
    """An instance built from sample values of the types ``cls.__init__`` asks for."""
    if cls.__init__ is BaseException.__init__ or cls.__init__ is Exception.__init__:
        return cls("bad-input.png is unusable")
    hints = typing.get_type_hints(cls.__init__)
    kwargs = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is not parameter.empty:
            continue
        kind = hints.get(name, str)
        assert kind in _SAMPLES, f"{cls.__name__}.__init__({name}: {kind}) needs a sample value in this test"
        kwargs[name] = _SAMPLES[kind]
    return cls(**kwargs)


def test_every_package_error_is_found() -> None:
    names = {cls.__name__ for cls in ERRORS}
    assert {"SstarError", "TrainingDivergedError", "StorageError", "NotFound"} <= names


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_error_round_trips_through_pickle(cls: type[BaseException]) -> None:
    error = _instance(cls)
    error.add_note("raised in a worker")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error) and copy.args == error.args
    assert vars(copy) == vars(error)  # fields and notes intact
