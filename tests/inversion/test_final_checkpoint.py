"""The trainer hands each concept's final checkpoint to ``on_checkpoint`` as the concept finishes (issue 20): a
run killed while the rest of its pack trains, or after training and before publishing, resumes the concept from
the output store with no step repeated (before, only the periodic checkpoints were uploaded, and a kill after
training re-trained the last interval)."""

from __future__ import annotations

from pathlib import Path


def test_a_finished_concept_is_handed_over_before_the_next_one_trains_and_resumes_with_no_step(
    tiny_model_dir, concept_images, tmp_path
):
    from inversion.config import ConceptConfig, TrainConfig
    from inversion.model.components import load_components
    from inversion.training.checkpoint import read_checkpoint
    from inversion.training.trainer import train_concepts

    components = load_components(tiny_model_dir)
    config = TrainConfig(steps=3, batch_size=1, checkpoint_every=0, device="cpu", stop="fixed")
    concepts = [
        ConceptConfig("<first>", "square", concept_images, seed=0),
        ConceptConfig("<second>", "square", concept_images, seed=1),
    ]
    dirs = [tmp_path / "first", tmp_path / "second"]
    events: list[tuple[str, str, int]] = []

    def uploaded(token: str, path: Path) -> None:
        events.append(("checkpoint", token, read_checkpoint(path).step))

    def stepped(report) -> None:
        events.extend(("step", token, report.step) for token in report.losses)

    train_concepts(components, concepts, config, output_dirs=dirs, callback=stepped, on_checkpoint=uploaded, slots=1)
    checkpoints = [e for e in events if e[0] == "checkpoint"]
    assert checkpoints == [("checkpoint", "<first>", 3), ("checkpoint", "<second>", 3)]
    first_upload = events.index(("checkpoint", "<first>", 3))
    assert all(token == "<first>" for kind, token, _ in events[:first_upload] if kind == "step")
    assert any(token == "<second>" for kind, token, _ in events[first_upload:] if kind == "step"), (
        "the first concept's final checkpoint was handed over only after its pack ended"
    )

    events.clear()  # a re-run (the run was killed before publishing) resumes both and trains no step
    again = train_concepts(
        components, concepts, config, output_dirs=dirs, resume=True, callback=stepped, on_checkpoint=uploaded, slots=1
    )
    assert [r.resumed_from for r in again] == [3, 3]
    assert events == []
