"""The ``sstar`` ML commands: they work end to end, and bad input gets one clear line and exit 2."""

from __future__ import annotations

import pytest
from PIL import Image

from flows.cli import main
from inversion.embeddings.formats import load_embedding


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_invert_then_render(tiny_model_dir, concept_images, tmp_path, capsys):
    out = tmp_path / "emb"
    code, stdout, _ = _run(
        capsys,
        "invert",
        "--model",
        tiny_model_dir,
        "--images",
        concept_images,
        "--token",
        "<red-sq>",
        "--init",
        "square",
        "--vectors",
        "2",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--out",
        out,
    )
    assert code == 0, stdout
    assert "learned <red-sq> in 3 steps" in stdout
    assert load_embedding(out / "learned_embeds.safetensors").vectors.shape == (2, 32)
    assert load_embedding(out / "red-sq.pt").token == "<red-sq>"
    grid = tmp_path / "grid.png"
    code, stdout, _ = _run(
        capsys,
        "render",
        "--model",
        tiny_model_dir,
        "--embedding",
        out / "learned_embeds.safetensors",
        "--prompt",
        "a photo of <red-sq>",
        "--prompt",
        "a watercolor of <red-sq>",
        "--seeds",
        "0-1",
        "--steps",
        "2",
        "--out",
        grid,
    )
    assert code == 0 and grid.is_file()
    assert Image.open(grid).size[0] >= 128


def _invert_args(model, images, out):
    return [
        "invert",
        "--model",
        model,
        "--images",
        images,
        "--token",
        "<t>",
        "--init",
        "cat",
        "--steps",
        "1",
        "--out",
        out,
    ]


def test_missing_model_folder(tmp_path, concept_images, capsys):
    code, _, err = _run(capsys, *_invert_args(tmp_path / "nope", concept_images, tmp_path / "o"))
    assert code == 2 and err.strip() == f"sstar: error: model folder not found: {tmp_path / 'nope'}"


def test_folder_that_is_not_a_model(tmp_path, concept_images, capsys):
    code, _, err = _run(capsys, *_invert_args(concept_images, concept_images, tmp_path / "o"))
    assert code == 2 and "not a diffusers model folder (no model_index.json)" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_and_empty_image_folders(tiny_model_dir, tmp_path, capsys):
    code, _, err = _run(capsys, *_invert_args(tiny_model_dir, tmp_path / "none", tmp_path / "o"))
    assert code == 2 and f"image folder not found: {tmp_path / 'none'}" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    code, _, err = _run(capsys, *_invert_args(tiny_model_dir, empty, tmp_path / "o"))
    assert code == 2 and "no images" in err and str(empty) in err


def test_unreadable_image(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "00.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    code, _, err = _run(capsys, *_invert_args(tiny_model_dir, folder, tmp_path / "o"))
    assert code == 2 and f"cannot read image {folder / '00.jpg'}" in err
    assert len(err.strip().splitlines()) == 1


def test_token_already_in_vocabulary(tiny_model_dir, concept_images, tmp_path, capsys):
    args = _invert_args(tiny_model_dir, concept_images, tmp_path / "o")
    args[args.index("<t>")] = "dog"
    code, _, err = _run(capsys, *args)
    assert code == 2 and "token dog is already in the vocabulary" in err


def test_model_command_writes_a_loadable_folder(tmp_path, capsys):
    code, stdout, _ = _run(capsys, "model", "tiny", "--out", tmp_path / "m")
    assert code == 0 and (tmp_path / "m" / "model_index.json").is_file()


def test_score_command(tiny_model_dir, concept_images, tmp_path, capsys):
    import json

    import torch

    from inversion.embeddings.formats import LearnedEmbedding, save_diffusers
    from inversion.evaluation.clip import write_tiny_clip

    clip = write_tiny_clip(tmp_path / "clip.pt")
    emb = save_diffusers(LearnedEmbedding("<red-sq>", torch.randn(1, 32)), tmp_path / "e.safetensors")
    code, stdout, err = _run(
        capsys,
        "score",
        "--model",
        tiny_model_dir,
        "--embedding",
        emb,
        "--images",
        concept_images,
        "--class-word",
        "square",
        "--samples",
        "1",
        "--steps",
        "2",
        "--clip-arch",
        "sstar-tiny-clip",
        "--clip-checkpoint",
        clip,
        "--out",
        tmp_path / "scores",
    )
    assert code == 0, err
    scores = json.loads((tmp_path / "scores" / "scores.json").read_text())
    assert scores["inversion_lift"] == pytest.approx(scores["image_similarity"] - scores["baseline_image_similarity"])
    assert "raw CLIP cosines" in stdout and (tmp_path / "scores" / "grid.png").is_file()


def test_score_command_unknown_clip(tiny_model_dir, concept_images, tmp_path, capsys):
    import torch

    from inversion.embeddings.formats import LearnedEmbedding, save_diffusers

    emb = save_diffusers(LearnedEmbedding("<red-sq>", torch.randn(1, 32)), tmp_path / "e.safetensors")
    code, _, err = _run(
        capsys,
        "score",
        "--model",
        tiny_model_dir,
        "--embedding",
        emb,
        "--images",
        concept_images,
        "--class-word",
        "square",
        "--clip-arch",
        "no-such-clip",
        "--clip-pretrained",
        "x",
        "--out",
        tmp_path / "s",
    )
    assert code == 2 and "unknown CLIP architecture 'no-such-clip'" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_score_command_missing_embedding(tiny_model_dir, concept_images, tmp_path, capsys):
    code, _, err = _run(
        capsys,
        "score",
        "--model",
        tiny_model_dir,
        "--embedding",
        tmp_path / "none.safetensors",
        "--images",
        concept_images,
        "--class-word",
        "square",
        "--out",
        tmp_path / "s",
    )
    assert code == 2 and "embedding file not found" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "argument --max-steps/--steps: steps must be >= 1, got 0"),
        (["--lr", "1.5"], "argument --lr: lr must be in (0, 1), got 1.5"),
        (["--resolution", "100"], "argument --resolution: resolution must be a multiple of 8, got 100"),
        (["--device", "gpu"], "argument --device: device must match"),
    ],
)
def test_invert_refuses_bad_settings_before_loading_anything(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "invert",
                "--model",
                str(tmp_path / "nope"),
                "--images",
                str(tmp_path),
                "--token",
                "<t>",
                "--init",
                "cat",
                "--out",
                str(tmp_path / "o"),
                *argv,
            ]
        )
    assert stop.value.code == 2 and message in capsys.readouterr().err
