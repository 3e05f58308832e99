"""Fixtures shared by the whole suite: a tiny random-weight diffusion model and small concept folders."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# tasks called outside a flow (tests/tasks) log locally only; Prefect would warn on every such record
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

REPO_ROOT = Path(__file__).resolve().parents[1]
DREAMBOOTH = Path(
    os.environ.get("SSTAR_DREAMBOOTH_DIR") or REPO_ROOT.parent / "shared" / "datasets" / "dreambooth" / "dataset"
)


@pytest.fixture(scope="session")
def dreambooth_dir() -> Path:
    """The 30 real DreamBooth photo concepts, read in place (never copied into the repo).

    Missing data fails the tests that need it, loudly: a skip here would hide them.
    """
    if not (DREAMBOOTH / "prompts_and_classes.txt").is_file():
        pytest.fail(f"DreamBooth photos not found at {DREAMBOOTH} (set SSTAR_DREAMBOOTH_DIR to the dataset folder)")
    return DREAMBOOTH


@pytest.fixture(scope="session", autouse=True)
def _quiet_libraries() -> None:
    from inversion.cli import quiet_libraries

    quiet_libraries()


@pytest.fixture(autouse=True)
def _torch_threads_given_back() -> Iterator[None]:
    """A test (or the code it calls) that changes torch's process-wide thread count must restore it: a
    later test training in the same process would otherwise reduce floats in another order and lose
    bit-exact comparisons (a leaked ``set_num_threads(1)`` broke the resume-after-kill test this way)."""
    import torch

    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    assert after == before, f"torch's thread count was left at {after} (was {before}); restore it"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight Stable Diffusion pipeline folder (real CLIP vocabulary), built once."""
    from inversion.model.zoo import write_random_model

    return write_random_model("tiny", tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def sd2_tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight SD 2.x-structured pipeline folder (OpenCLIP-style text side, v-prediction)."""
    from inversion.model.zoo import write_random_model

    return write_random_model("sd2-tiny", tmp_path_factory.mktemp("models") / "sd2-tiny")


@pytest.fixture(scope="session")
def sdxl_tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight SDXL pipeline folder (two text encoders of widths 32 and 48)."""
    from inversion.model.zoo import write_random_model

    return write_random_model("sdxl-tiny", tmp_path_factory.mktemp("models") / "sdxl-tiny")


@pytest.fixture(scope="session")
def sd3_tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight SD 3.5-structured folder (CLIP-L 32, CLIP-G 48, T5 96 wide with a unigram tokenizer)."""
    from inversion.model.zoo import write_random_model

    return write_random_model("sd3-tiny", tmp_path_factory.mktemp("models") / "sd3-tiny")


@pytest.fixture(scope="session")
def flux_tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight Flux.1-dev-structured folder (CLIP-L 32 for the pooled vector, T5 96 wide)."""
    from inversion.model.zoo import write_random_model

    return write_random_model("flux-tiny", tmp_path_factory.mktemp("models") / "flux-tiny")


def write_shape_images(folder: Path, count: int = 4, color=(200, 40, 40), size: int = 80, seed: int = 0) -> Path:
    """A concept folder: a coloured square at varying positions on a gray background."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = np.full((size, size, 3), 128, dtype=np.uint8)
        x, y = rng.integers(0, size // 2, size=2)
        pixels[y : y + size // 2, x : x + size // 2] = color
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture
def concept_images(tmp_path) -> Path:
    return write_shape_images(tmp_path / "red-square")


# --- a real S3 endpoint: moto's server on 127.0.0.1 in a child process -----------------------------
from storage.store.settings import S3Settings  # noqa: E402
from tests.storage.helpers import ACCESS_KEY, BUCKET, SECRET_KEY, make_settings  # noqa: E402

MOTO_SERVER = Path(__file__).resolve().parent / "storage" / "moto_s3_server.py"

_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_MAX_ATTEMPTS",
)


@pytest.fixture(scope="session")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Dummy credentials in the environment; no shared config files, no instance metadata."""
    saved = {name: os.environ.get(name) for name in _AWS_VARS}
    for name in _AWS_VARS:
        os.environ.pop(name, None)
    empty = tmp_path_factory.mktemp("aws") / "none"
    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_EC2_METADATA_DISABLED="true",
    )
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def moto_endpoint(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto S3 server running in a child process."""
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(MOTO_SERVER), "0"],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                raise RuntimeError(f"moto server did not start; see {log_path}")
            ready, _, _ = select.select([proc.stdout], [], [], remaining)
            if ready:
                line += os.read(proc.stdout.fileno(), 1)
        port = int(line.decode().strip().rsplit(":", 1)[1])
        endpoint = f"http://127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3_settings(moto_endpoint: str) -> S3Settings:
    return make_settings(moto_endpoint)


@pytest.fixture(scope="session")
def s3_client(s3_settings: S3Settings):
    client = s3_settings.s3_client()
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server (SQLite, ephemeral) for the whole session, with the slot wait the CLI
    gives its own ephemeral server (``flows.prefect_setup.SLOT_WAIT_S``): with Prefect's 30 s default a
    test whose tasks queue for the GPU slot sleeps up to 30 s each time — and the CLI's lease storage
    (files under ``PREFECT_HOME``), which lets a waiter free the slot of a holder that was killed."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.prefect_setup import LEASE_STORAGE, LEASE_STORAGE_VARIABLE, SLOT_WAIT_S, SLOT_WAIT_VARIABLE

    os.environ.setdefault(SLOT_WAIT_VARIABLE, str(SLOT_WAIT_S))  # the server subprocess inherits it
    os.environ.setdefault(LEASE_STORAGE_VARIABLE, LEASE_STORAGE)
    with prefect_test_harness(server_startup_timeout=60):
        yield
