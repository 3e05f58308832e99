"""Every Prefect task is named as its function is named, in kebab case (``stage_concept`` →
``stage-concept``), so a task run in the UI, a log line or a benchmark's timing leads to its code."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from prefect import Task

import flows
import tasks


def kebab(name: str) -> str:
    return name.replace("_", "-")


def _tasks() -> list[tuple[str, Task]]:
    """``(module.attribute, task)`` of every Prefect task defined by a module of ``tasks`` or ``flows``."""
    found = []
    for package in (tasks, flows):
        for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for attribute, value in vars(module).items():
                if isinstance(value, Task) and value.fn.__module__ == module.__name__:
                    found.append((f"{module.__name__}.{attribute}", value))
    return found


def test_the_search_finds_the_tasks_of_both_packages() -> None:
    names = {where for where, _ in _tasks()}
    assert {
        "tasks.staging.stage_chunk",
        "tasks.score.score_outcomes_task",
        "flows.learn_pack.run_pack_deployment",
    } <= names


@pytest.mark.parametrize("where, found", _tasks(), ids=lambda value: value if isinstance(value, str) else "")
def test_a_task_is_named_as_its_function(where: str, found: Task) -> None:
    assert found.name == kebab(found.fn.__name__), where


def test_a_wrapper_of_a_function_is_that_function_with_a_task_suffix() -> None:
    for where, found in _tasks():
        attribute = where.rsplit(".", 1)[1]
        assert attribute in (found.fn.__name__, f"{found.fn.__name__}_task"), where
