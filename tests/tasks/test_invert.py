"""tasks.invert: a pack of staged concepts is learned together on the tiny model; checkpoints go to the
output store and a later attempt on a fresh worker resumes from them; bad concepts come back as errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from common.filenames import TRAINING_LOG
from inversion.embeddings.formats import a1111_filename, load_embedding
from storage.results import ResultStore
from tasks.ingest import scan_catalog, stage_concept
from tasks.invert import invert_pack
from tasks.records import ConceptRecord
from tasks.settings import RunSettings

pytestmark = pytest.mark.usefixtures("prefect_harness", "quiet_run_logger")

RUN = RunSettings(device="cpu", checkpoint_every=1)


def _stage(catalog: Path, learn, work: Path, concept_ids: list[str]):
    by_id = {r.concept_id: r for r in scan_catalog.fn(str(catalog), learn, concept_ids).records}
    return [stage_concept(str(catalog), by_id[cid], str(work)) for cid in concept_ids]


def test_a_pack_learns_each_live_concept_and_passes_failures_through(catalog: Path, learn, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    staged = _stage(catalog, learn, tmp_path / "work", ["red-square", "broken", "half"])
    assert staged[1].error is not None
    outcomes = invert_pack.fn(staged, learn, RUN, out)

    assert [o.staged for o in outcomes] == staged  # one outcome per staged concept, in order
    assert outcomes[1].error == staged[1].error and outcomes[1].embedding_path is None
    results = ResultStore.open(out)
    for outcome in (outcomes[0], outcomes[2]):
        record = outcome.staged.record
        assert outcome.error is None and (outcome.steps, outcome.resumed_from) == (2, 0)
        assert outcome.final_loss is not None and outcome.train_seconds > 0
        embedding = load_embedding(Path(outcome.embedding_path))
        assert embedding.token == record.token and tuple(embedding.vectors.shape)[0] == record.vectors
        training = json.loads((Path(outcome.embedding_path).parent / TRAINING_LOG).read_text())
        assert (training["steps"], training["resumed_from"], len(training["losses"])) == (2, 0, 2)
        # every file the trainer wrote, with the training log: what publishing takes
        folder = Path(outcome.embedding_path).parent
        assert outcome.files == (
            outcome.embedding_path,
            str(folder / a1111_filename(record.token)),
            str(folder / TRAINING_LOG),
        )
        # a pipeline's default policy is plateau, which never stops before its minimum steps: the cap stops these
        assert outcome.stop_reason == training["stop_reason"] == "max_steps"
        assert training["settings"]["stop"] == "plateau"
        assert (training["settings"]["concepts_in_queue"], training["settings"]["slots"]) == (2, 1)
        assert training["settings"]["images"] == outcome.staged.num_images
        assert results.list_checkpoints(record.concept_id, record.digest), "checkpoints go to the output store"
    assert not results.list_checkpoints("broken", staged[1].record.digest)


def test_a_later_attempt_on_a_fresh_worker_resumes_from_the_stored_checkpoint(
    catalog: Path, learn, tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    (first,) = invert_pack.fn(_stage(catalog, learn, tmp_path / "worker-1", ["red-square"]), learn, RUN, out)
    first_losses = json.loads((Path(first.embedding_path).parent / TRAINING_LOG).read_text())["losses"]
    # the next attempt (here: with more steps to go) runs on another machine: nothing local survives
    longer = learn.model_copy(update={"steps": 4})
    staged = _stage(catalog, learn, tmp_path / "worker-2", ["red-square"])
    assert not (Path(staged[0].work_dir) / "embedding").exists()
    (second,) = invert_pack.fn(staged, longer, RUN, out)
    assert second.error is None and second.steps == 4
    # the first attempt's final checkpoint: handed to the store as its concept finished (no step is repeated)
    resumed = second.resumed_from
    assert resumed == first.steps == 2
    training = json.loads((Path(second.embedding_path).parent / TRAINING_LOG).read_text())
    assert training["resumed_from"] == resumed and len(training["losses"]) == 4
    assert training["losses"][:resumed] == first_losses[:resumed]


def test_a_deterministic_training_error_fails_the_pack_without_raising(catalog: Path, learn, tmp_path: Path) -> None:
    (staged,) = _stage(catalog, learn, tmp_path / "work", ["red-square"])
    spec = staged.record.spec
    word = ConceptRecord(dataclasses.replace(spec, meta=dataclasses.replace(spec.meta, token="cat")))  # already a word
    taken = dataclasses.replace(staged, record=word)
    (outcome,) = invert_pack.fn([taken], learn, RUN, str(tmp_path / "out"))
    assert outcome.embedding_path is None and "cat" in outcome.error
