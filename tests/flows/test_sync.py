"""``flows.sync.sync_result``: a synchronous Prefect call's result passes through, a coroutine is refused."""

from __future__ import annotations

import prefect
import pytest
from prefect.deployments.runner import RunnerDeployment

from flows.cli import build_parser
from flows.sync import sync_result


def test_sstar_serve_hands_prefect_its_three_deployments(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[object] = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments: served.extend(deployments))
    args = build_parser().parse_args(["serve", "--catalog", "s3://bkt/cat", "--out", "s3://bkt/out", "--model", "m"])
    assert args.func(args) == 0
    nightly, adhoc, pack = served
    assert all(isinstance(d, RunnerDeployment) for d in served)
    assert [(d.name, d.flow_name) for d in served] == [
        ("learn-catalog-nightly", "learn-catalog"),
        ("learn-concept", "learn-concept"),
        ("learn-pack", "learn-pack"),  # what a nightly run with --deployment learn-pack/learn-pack fans out to
    ]
    assert nightly.parameters["catalog"] == adhoc.parameters["catalog"] == "s3://bkt/cat"
    assert pack.parameters["out"] == nightly.parameters["out"] == "s3://bkt/out"


def test_a_coroutine_is_refused_and_closed() -> None:
    async def pending() -> int:
        return 1

    coroutine = pending()
    with pytest.raises(TypeError, match="expected the result of a synchronous Prefect call, got <coroutine"):
        sync_result(coroutine)
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning
