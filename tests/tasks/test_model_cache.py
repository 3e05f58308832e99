"""tasks.model_cache: the diffusion model and the CLIP load once per process, however many concepts and
threads ask for them."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import inversion.model.components
from inversion.config import DEFAULT_CLIP_PRETRAINED, ClipSpec
from tasks import model_cache
from tasks.settings import EvalSettings, LearnSettings, RunSettings


@pytest.fixture
def counted_loads(monkeypatch) -> list[str]:
    """Replaces the model loader by one that records each load and returns a fresh object."""
    loads: list[str] = []

    def load_components(model: str):
        loads.append(model)
        return object()

    monkeypatch.setattr(inversion.model.components, "load_components", load_components)
    return loads


def test_diffusion_model_loads_once_for_many_threads(monkeypatch) -> None:
    model = f"/models/{uuid.uuid4().hex}"  # a name no other test has cached
    loads: list[str] = []
    second_load = threading.Event()

    def slow_load(name: str):
        loads.append(name)
        if len(loads) > 1:
            second_load.set()
        second_load.wait(0.5)  # a load takes a while: long enough for an unguarded second one to start
        return object()

    monkeypatch.setattr(inversion.model.components, "load_components", slow_load)
    start = threading.Barrier(8)

    def ask(_: int):
        start.wait(10)
        return model_cache.diffusion_components(model)

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, range(8)))
    assert loads == [model]
    assert all(g is got[0] for g in got)
    assert model_cache.diffusion_components(model) is got[0] and loads == [model]


def test_each_model_is_loaded_once(counted_loads: list[str]) -> None:
    a, b = f"/models/{uuid.uuid4().hex}", f"/models/{uuid.uuid4().hex}"
    first = [model_cache.diffusion_components(m) for m in (a, b, a, b)]
    assert counted_loads == [a, b]
    assert first[0] is first[2] and first[1] is first[3] and first[0] is not first[1]


def test_renderers_share_the_cached_weights(tiny_model_dir) -> None:
    one = model_cache.renderer(str(tiny_model_dir), steps=2, guidance=1.0, device="cpu")
    two = model_cache.renderer(str(tiny_model_dir), steps=3, guidance=7.5, device="cpu")
    assert one.components is two.components is model_cache.diffusion_components(str(tiny_model_dir))
    assert (one.settings.steps, two.settings.steps) == (2, 3)


def test_a_runs_renderer_takes_each_rendering_setting_from_its_settings(tiny_model_dir) -> None:
    learn = LearnSettings(model=str(tiny_model_dir), precision="bf16")
    evaluation = EvalSettings(render_steps=3, guidance=2.5, sampler="dpm")
    made = model_cache.renderer_for(learn, evaluation, RunSettings(device="cpu"))
    assert made.components is model_cache.diffusion_components(str(tiny_model_dir))
    settings = made.settings
    assert (settings.steps, settings.guidance, settings.sampler) == (3, 2.5, "dpm")
    assert (settings.device, settings.precision) == ("cpu", "bf16")


def test_eval_settings_name_their_clip(tiny_clip) -> None:
    assert EvalSettings(clip_arch="a", clip_checkpoint=str(tiny_clip)).clip_spec() == ClipSpec("a", tiny_clip)
    assert EvalSettings(clip_arch="a").clip_spec() == ClipSpec("a", pretrained=DEFAULT_CLIP_PRETRAINED)
    assert EvalSettings(clip_arch="a", clip_pretrained="laion").clip_spec() == ClipSpec("a", pretrained="laion")


def test_clip_loads_once_per_checkpoint_and_device(tiny_clip, tmp_path) -> None:
    from inversion.evaluation.clip import TINY_ARCH, write_tiny_clip

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: model_cache.clip_model(ClipSpec(TINY_ARCH, tiny_clip), "cpu"), range(4)))
    assert all(g is got[0] for g in got)
    other = write_tiny_clip(tmp_path / "other.safetensors", seed=1)
    assert model_cache.clip_model(ClipSpec(TINY_ARCH, other), "cpu") is not got[0]
    assert model_cache.clip_model(ClipSpec(TINY_ARCH, tiny_clip), "cpu") is got[0]
