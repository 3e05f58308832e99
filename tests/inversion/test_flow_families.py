"""SD 3 and Flux (issue 23): the tiny models, their families, their tokenizers' words, and the commands that
take them like every other family (``sstar invert`` and ``sstar inspect --model`` from the CLI).

The tiny folders are built by ``sstar model`` (the fixtures call what it calls; one test runs the command) and
must load in diffusers' own pipelines; the T5 tokenizer is trained offline and read without torch.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from common.filenames import word_filename
from flows.cli import main
from inversion.embeddings.formats import LearnedEmbedding, load_embedding, save_embedding_files
from inversion.embeddings.inspector import ModelVocabulary, inspect_file, inspect_files
from inversion.errors import InputError
from inversion.model.components import load_components
from inversion.model.fingerprint import model_fingerprint
from inversion.model.info import FAMILIES, classify, read_family, tokenizer_vocabulary
from inversion.model.vocab import T5_SPECIALS, T5_VOCAB_SIZE, t5_tokenizer_json
from inversion.text.placeholders import vocabulary_clash
from tasks.preflight import PreflightError, check_model
from tests.flows.sstar_cli import run_python


@pytest.fixture(scope="module")
def sd3(sd3_tiny_model_dir):
    return load_components(sd3_tiny_model_dir, families=FAMILIES)


@pytest.fixture(scope="module")
def flux(flux_tiny_model_dir):
    return load_components(flux_tiny_model_dir, families=FAMILIES)


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_family_is_read_from_its_folder(
    tiny_model_dir, sd2_tiny_model_dir, sdxl_tiny_model_dir, sd3_tiny_model_dir, flux_tiny_model_dir
):
    folders = (tiny_model_dir, sd2_tiny_model_dir, sdxl_tiny_model_dir, sd3_tiny_model_dir, flux_tiny_model_dir)
    assert [read_family(folder) for folder in folders] == list(FAMILIES) == ["sd1", "sd2", "sdxl", "sd3", "flux"]
    classes = [json.loads((folder / "model_index.json").read_text())["_class_name"] for folder in folders[3:]]
    assert classes == ["StableDiffusion3Pipeline", "FluxPipeline"]


def test_sstar_model_writes_the_flux_folder(tmp_path, capsys):
    code, out, _ = _run(capsys, "model", "flux-tiny", "--out", tmp_path / "flux")
    assert code == 0 and "wrote flux-tiny model" in out
    assert read_family(tmp_path / "flux") == "flux"


def test_a_transformer_of_no_known_family_is_named(tmp_path):
    folder = tmp_path / "pixart"
    folder.mkdir()
    index = {"_class_name": "PixArtSigmaPipeline", "transformer": ["diffusers", "PixArtTransformer2DModel"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match=r"PixArtTransformer2DModel is none of the families sstar knows"):
        read_family(folder)
    with pytest.raises(InputError, match="none of the families"):
        classify(False, None, "HunyuanDiT2DModel")


def test_the_components_name_every_part(sd3, flux):
    assert sd3.family == "sd3" and flux.family == "flux"
    assert [type(encoder).__name__ for _, encoder in sd3.text_sides] == [
        "CLIPTextModelWithProjection",
        "CLIPTextModelWithProjection",
        "T5EncoderModel",
    ]
    assert [type(encoder).__name__ for _, encoder in flux.text_sides] == ["CLIPTextModel", "T5EncoderModel"]
    for components in (sd3, flux):
        t5_tokenizer, t5 = components.text_sides[-1]
        assert t5.config.vocab_size == len(t5_tokenizer) == T5_VOCAB_SIZE
        assert components.unet is None and components.denoiser is components.transformer
        assert components.flow_matching and components.resolution == 64 and components.device.type == "cpu"
        assert type(components.noise_scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
        assert not any(p.requires_grad for module in components.modules for p in module.parameters())
    clip_widths = sum(encoder.config.hidden_size for _, encoder in sd3.text_sides[:2])
    assert sd3.text_encoder_3.config.d_model >= clip_widths == 32 + 48, "SD 3 pads its CLIP features up to T5's width"
    assert (sd3.latent_scaling, sd3.latent_shift) == (pytest.approx(1.5305), pytest.approx(0.0609))
    assert (flux.latent_scaling, flux.latent_shift) == (pytest.approx(0.3611), pytest.approx(0.1159))
    assert flux.transformer.config.guidance_embeds and flux.noise_scheduler.config.use_dynamic_shifting


def test_diffusers_pipelines_load_the_folders_and_render(sd3_tiny_model_dir, flux_tiny_model_dir):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    runs = (
        (StableDiffusion3Pipeline, sd3_tiny_model_dir, {}),
        (FluxPipeline, flux_tiny_model_dir, {"guidance_scale": 3.5}),
    )
    for pipeline_class, folder, options in runs:
        pipeline = pipeline_class.from_pretrained(folder)
        pipeline.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(0)
        image = pipeline(
            "a photo of a red cat",
            num_inference_steps=2,
            height=64,
            width=64,
            max_sequence_length=32,
            generator=generator,
            output_type="np",
            **options,
        ).images[0]
        assert image.shape == (64, 64, 3) and bool(torch.isfinite(torch.from_numpy(image)).all())


def test_the_t5_tokenizer_is_trained_the_same_every_time():
    again = t5_tokenizer_json.__wrapped__()  # trains anew (the trainer's own scores differ run to run)
    assert again == t5_tokenizer_json()
    model = json.loads(again)["model"]
    assert model["type"] == "Unigram" and [piece for piece, _ in model["vocab"][:3]] == list(T5_SPECIALS)


def test_every_tokenizer_of_the_family_is_read_without_torch(sd3, flux, sd3_tiny_model_dir, flux_tiny_model_dir):
    for components, folder in ((sd3, sd3_tiny_model_dir), (flux, flux_tiny_model_dir)):
        words = frozenset(word for tokenizer, _ in components.text_sides for word in tokenizer.get_vocab())
        assert tokenizer_vocabulary(folder) == words
        assert "\u2581cat" in words and "</s>" in words, "T5's unigram pieces are among the words"
    code = (
        "import sys; from inversion.model.info import tokenizer_vocabulary, read_family; "
        "words = tokenizer_vocabulary(sys.argv[1]); assert read_family(sys.argv[1]) == 'sd3'; "
        "heavy = [m for m in ('torch', 'transformers', 'tokenizers', 'diffusers') if m in sys.modules]; "
        "assert not heavy, heavy; print(len(words))"
    )
    done = run_python(code, str(sd3_tiny_model_dir), env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) == len(tokenizer_vocabulary(sd3_tiny_model_dir))


def test_a_word_of_the_t5_vocabulary_is_refused(flux_tiny_model_dir):
    assert vocabulary_clash("</s>", 1, tokenizer_vocabulary(flux_tiny_model_dir)) == "</s>"
    assert vocabulary_clash("<my-cat>", 2, tokenizer_vocabulary(flux_tiny_model_dir)) is None


def test_a_missing_t5_tokenizer_is_named(flux_tiny_model_dir, tmp_path):
    folder = tmp_path / "flux"
    shutil.copytree(flux_tiny_model_dir, folder)
    shutil.rmtree(folder / "tokenizer_2")
    with pytest.raises(InputError, match=r"cannot read the tokenizer of .*flux: it has no tokenizer_2/tokenizer.json"):
        tokenizer_vocabulary(folder)
    with pytest.raises(PreflightError, match=r"^--model: cannot read the tokenizer of .*it has no tokenizer_2/"):
        check_model(str(folder))
    shutil.rmtree(folder / "text_encoder_2")
    with pytest.raises(PreflightError, match=r"^--model: model .*flux has no readable text_encoder_2/config.json"):
        check_model(str(folder))


def test_the_fingerprint_covers_the_transformer_and_the_third_text_side(sd3_tiny_model_dir, tmp_path):
    folder = tmp_path / "sd3"
    shutil.copytree(sd3_tiny_model_dir, folder)
    before = model_fingerprint(folder, cache_file=tmp_path / "cache.json")
    for part in ("transformer", "text_encoder_3", "tokenizer_3"):
        config = next(path for path in sorted((folder / part).iterdir()) if path.suffix == ".json")
        config.write_text(config.read_text() + " ")
        after = model_fingerprint(folder, cache_file=tmp_path / "cache.json")
        assert after != before, part
        before = after


#: what ``sstar invert`` writes for a word ``<sq>``, per family: ComfyUI's file, and for Flux diffusers' pair file
WORD_FILES = {"sd3": {"sq.safetensors"}, "flux": {"sq.safetensors", "sq_emb.safetensors"}}


def test_every_family_is_taken_where_sd3_and_flux_were_refused(sd3_tiny_model_dir, flux_tiny_model_dir):
    """The family gate is open: the loader's default and the preflight take SD 3 and Flux (no refusal left)."""
    assert load_components(flux_tiny_model_dir).family == "flux"
    for folder in (sd3_tiny_model_dir, flux_tiny_model_dir):
        assert check_model(str(folder)) == model_fingerprint(folder)
    with pytest.raises(InputError, match=r"is a flux model; this needs one of: sd1, sdxl$"):
        load_components(flux_tiny_model_dir, families=("sd1", "sdxl"))  # a caller that handles only some


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_sstar_invert_learns_a_word_in_every_encoder_from_the_cli(family, concept_images, tmp_path, capsys, request):
    """``sstar invert`` on the tiny model (1 step, 32 px): the family's files, every encoder's rows (T5's too),
    no diffusers learned_embeds file; ``sstar inspect --model`` reads them back with each encoder's nearest words."""
    model = request.getfixturevalue(f"{family}_tiny_model_dir")
    out = tmp_path / "word"
    argv = ["invert", "--model", model, "--images", concept_images, "--token", "<sq>", "--init", "cat"]
    argv += ["--steps", "1", "--batch-size", "1", "--resolution", "32", "--device", "cpu", "--out", out]
    code, printed, err = _run(capsys, *argv)
    assert code == 0, err
    assert "learned <sq> in 1 steps" in printed
    assert WORD_FILES[family] <= {p.name for p in out.iterdir()} and not (out / "learned_embeds.safetensors").exists()
    components = load_components(model)
    widths = tuple(int(encoder.get_input_embeddings().weight.shape[1]) for _, encoder in components.text_sides)
    for name in WORD_FILES[family]:
        word = load_embedding(out / name)
        assert (word.token, word.family, word.widths) == ("<sq>", family, widths)
    code, printed, err = _run(capsys, "inspect", out / "sq.safetensors", "--model", model)
    assert code == 0, err
    keys = ["clip_l", "clip_g", "t5xxl"] if family == "sd3" else ["clip_l", "t5xxl"]
    nearest = [line for line in printed.splitlines() if "nearest:" in line]
    assert len(nearest) == len(keys) and all(f"  {key} (" in printed for key in keys), printed
    assert "\u2581" in nearest[-1], "the T5 rows' nearest words are T5's unigram pieces"


def test_sstar_inspect_places_every_encoders_rows_in_its_own_vocabulary(flux_tiny_model_dir, tmp_path):
    """A Flux word at cat's CLIP-L row and T5's piece for cat: each encoder's nearest word is its own cat."""
    vocabulary = ModelVocabulary.load(str(flux_tiny_model_dir))
    assert [len(words) for words in vocabulary.words] == [int(t.shape[0]) for t in vocabulary.tables]
    rows = [
        table[words.index(cat)] for table, words, cat in zip(vocabulary.tables, vocabulary.words, ("cat", "\u2581cat"))
    ]
    word = LearnedEmbedding.from_tables("<like-cat>", [(2 * row).unsqueeze(0) for row in rows], "flux")
    files = save_embedding_files(word, tmp_path)
    for path in files.values():
        found = inspect_file(path, vocabulary)
        assert [t.nearest[0][0] for t in found.tables] == ["cat", "\u2581cat"]
        assert found.ratio is not None
    errors: list[str] = []
    assert inspect_files([files["comfyui"]], model=str(flux_tiny_model_dir), out=lambda _: None, err=errors.append) == 0
    assert errors == []


@pytest.mark.parametrize("token", ["<sq>", "<learned_embeds>", "<café-猫>"])
def test_the_word_file_is_one_the_family_writes_and_holds_every_encoder(sd3, flux, token, tmp_path):
    """common.filenames.word_filename (what the flows score, index and link) names a file save_embedding_files
    writes, and reading it alone gives the whole word — a name that clashes or needs a hash included."""
    for components in (sd3, flux):
        tables = [torch.randn(2, encoder.config.hidden_size) for _, encoder in components.text_sides]
        word = LearnedEmbedding.from_tables(token, tables, components.family)
        folder = tmp_path / components.family
        written = save_embedding_files(word, folder)
        name = word_filename(token, components.family)
        assert folder / name == written["comfyui"] and name != "learned_embeds.safetensors"
        again = load_embedding(folder / name)
        assert (again.token, again.family) == (token, components.family) and torch.equal(again.vectors, word.vectors)
    assert word_filename(token, "sdxl") == word_filename(token, None) == "learned_embeds.safetensors"
