"""Fixtures for the storage tests: a real moto S3 server on 127.0.0.1 (its own process), both
backends behind one parametrised fixture, and a fault-injecting reverse proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.store.base import ObjectStore
from storage.store.open import open_store
from storage.store.settings import S3Settings

from .helpers import FaultProxy, unique_s3_uri


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def root_uri(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty store root on the parametrised backend."""
    if backend == "local":
        return str(tmp_path / "root")
    request.getfixturevalue("s3_client")  # server up, bucket created
    return unique_s3_uri()


@pytest.fixture
def settings_for(backend: str, request: pytest.FixtureRequest) -> S3Settings | None:
    return request.getfixturevalue("s3_settings") if backend == "s3" else None


@pytest.fixture
def store(root_uri: str, settings_for: S3Settings | None) -> ObjectStore:
    return open_store(root_uri, settings_for)


@pytest.fixture
def fault_proxy(moto_endpoint: str):
    """Factory: ``fault_proxy(rate=…, seed=…, conflict_rate=…)`` → a running :class:`FaultProxy`."""
    proxies: list[FaultProxy] = []

    def start(*, rate: float = 0.2, seed: int = 1234, conflict_rate: float = 0.0) -> FaultProxy:
        proxy = FaultProxy(moto_endpoint, rate=rate, seed=seed, conflict_rate=conflict_rate).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()
