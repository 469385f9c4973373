"""The job runner's record types: the manifest an adapter carries, the epochs folder's
index entries, and the resume state as the loop state plus what the next epoch needs."""

from dataclasses import fields
from pathlib import Path

from workers.finetune_runner import Manifest, SavedEpoch
from workers.training import LoopState, ResumeState


def _final(**changes: object) -> Manifest:
    values: dict = {
        "name": "ft:base::job-1",
        "job_id": "job-1",
        "base_model": "base",
        "base_model_source": "/models/base",
        "hyperparameters": {"n_epochs": 3},
        "seed": 7,
        "training_file": {"id": "file-1", "sha256": "ab"},
        "validation_file": None,
        "data_sha256": "cd",
        "metrics": {"steps": 12},
        "parent": None,
        "method": "supervised",
        "validation": {"source": "none", "examples": 0, "note": "No validation"},
        "selected": {"epoch": 3, "step": 12},
    }
    return Manifest(**{**values, **changes})


def test_the_final_manifest_says_which_epoch_and_a_checkpoint_which_it_is(tmp_path: Path):
    final = _final()
    plain = final.as_dict()
    assert plain["selected"] == {"epoch": 3, "step": 12} and "checkpoint" not in plain
    assert plain["validation_file"] is None and plain["parent"] is None  # kept as null

    saved = SavedEpoch(2, 8, tmp_path / "step-8", {"epoch": 2, "step": 8, "train_loss": 0.5})
    own = final.for_checkpoint(f"{final.name}:ckpt-step-8", saved).as_dict()
    assert "selected" not in own
    assert own["checkpoint"] == {"epoch": 2, "step": 8}
    assert own["name"] == "ft:base::job-1:ckpt-step-8"
    assert own["metrics"] == saved.metrics
    unchanged = {k for k in plain if k not in ("name", "metrics", "selected")}
    assert {k: own[k] for k in unchanged} == {k: plain[k] for k in unchanged}
    assert final.as_dict() == plain  # the final's own manifest is left as it was


def test_a_saved_epoch_reads_back_from_its_index_entry(tmp_path: Path):
    saved = SavedEpoch(1, 4, tmp_path / "step-4", {"epoch_valid_loss": 1.25})
    entry = saved.index_entry()
    assert entry == [1, 4, "step-4", {"epoch_valid_loss": 1.25}]  # index.json's format
    assert SavedEpoch.from_index_entry(tmp_path, entry) == saved


def test_the_resume_state_is_the_loop_state_and_what_the_next_epoch_needs():
    loop = [f.name for f in fields(LoopState)]
    resume = [f.name for f in fields(ResumeState)]
    assert resume[: len(loop)] == loop
    assert resume[len(loop) :] == ["weights", "optimizer", "scheduler", "torch_rng"]
    state = LoopState(epoch=2, history=[], epochs=[])
    copy = state.copy()
    copy.history.append("a step")  # type: ignore[arg-type]
    assert state.history == [] and copy.epoch == 2
