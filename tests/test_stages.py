"""The stage runner: skip finished stages, rerun on a changed config or a lost output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from occaist.pipelines.stages import MANIFEST, Stage, config_hash, run_stage


def _counting_stage(calls: list[str], config: dict, fail: bool = False) -> Stage:
    def run(stage_dir: Path) -> None:
        calls.append(stage_dir.name)
        if fail:
            raise KeyboardInterrupt  # a kill in the middle of the stage
        (stage_dir / "out.txt").write_text(json.dumps(config))

    return Stage(name="s", config=config, run=run, outputs=["out.txt"])


def test_finished_stage_is_skipped(tmp_path: Path) -> None:
    calls: list[str] = []
    _, ran = run_stage(_counting_stage(calls, {"steps": 3}), tmp_path)
    assert ran
    _, ran = run_stage(_counting_stage(calls, {"steps": 3}), tmp_path)
    assert not ran
    assert calls == ["s"]
    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert manifest["config_hash"] == config_hash({"steps": 3})


def test_changed_config_reruns_and_keeps_old_outputs_aside(tmp_path: Path) -> None:
    calls: list[str] = []
    run_stage(_counting_stage(calls, {"steps": 3}), tmp_path)
    _, ran = run_stage(_counting_stage(calls, {"steps": 4}), tmp_path)
    assert ran and len(calls) == 2
    assert json.loads((tmp_path / "s" / "out.txt").read_text()) == {"steps": 4}
    (old,) = (tmp_path / ".stale").iterdir()
    assert old.name == f"s-{config_hash({'steps': 3})[:10]}"
    assert json.loads((old / "out.txt").read_text()) == {"steps": 3}


def test_partial_outputs_of_another_config_are_not_resumed(tmp_path: Path) -> None:
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_stage(_counting_stage(calls, {"steps": 3}, fail=True), tmp_path)
    (tmp_path / "s" / "partial.ckpt").write_text("from steps=3")
    run_stage(_counting_stage(calls, {"steps": 4}), tmp_path)
    assert not (tmp_path / "s" / "partial.ckpt").exists()
    assert len(list((tmp_path / ".stale").iterdir())) == 1


def test_lost_output_reruns(tmp_path: Path) -> None:
    calls: list[str] = []
    run_stage(_counting_stage(calls, {"a": 1}), tmp_path)
    (tmp_path / "s" / "out.txt").unlink()
    _, ran = run_stage(_counting_stage(calls, {"a": 1}), tmp_path)
    assert ran and len(calls) == 2


def test_killed_stage_leaves_no_manifest_and_reruns(tmp_path: Path) -> None:
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_stage(_counting_stage(calls, {"a": 1}, fail=True), tmp_path)
    assert not (tmp_path / "s" / MANIFEST).exists()
    (tmp_path / "s" / "last.ckpt").write_text("resumable")
    _, ran = run_stage(_counting_stage(calls, {"a": 1}), tmp_path)
    assert ran and len(calls) == 2
    assert (tmp_path / "s" / "last.ckpt").exists()  # same config: partial work kept to resume


def test_missing_outputs_are_an_error(tmp_path: Path) -> None:
    stage = Stage(name="bad", config={}, run=lambda d: None, outputs=["never.txt"])
    with pytest.raises(RuntimeError, match=r"never\.txt"):
        run_stage(stage, tmp_path)
    assert not (tmp_path / "bad" / MANIFEST).exists()


def test_hash_ignores_key_order() -> None:
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
