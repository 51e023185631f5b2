"""Same preset and seed, same bytes: straight, resumed after an interruption, or in parallel."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from occaist.synth import world as world_module
from occaist.synth.presets import CarFusionPreset, ShapeNetPreset, StanfordCarsPreset, WorldPreset

MICRO = WorldPreset(
    name="micro",
    shapenet=ShapeNetPreset(models=4, split=[2, 1, 1], views=5, points=[500, 700]),
    stanford_cars=StanfordCarsPreset(train=2, test=1, width=[320, 340], multi_car_prob=0.5),
    carfusion=CarFusionPreset(
        train_sequences=["car_butler1"], test_sequences=[], cameras=2, frames=2, cars=[2, 3]
    ),
)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_interrupted_run_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    straight = world_module.generate_world(
        tmp_path / "a", MICRO, seed=3, workers=1, progress=False
    )
    reference = _snapshot(straight)
    assert len(reference) > 40

    calls = {"n": 0}
    real_run_item = world_module.run_item

    def crashing_run_item(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated interruption")
        return real_run_item(*args, **kwargs)

    monkeypatch.setattr(world_module, "run_item", crashing_run_item)
    with pytest.raises(KeyboardInterrupt):
        world_module.generate_world(tmp_path / "b", MICRO, seed=3, workers=1, progress=False)
    partial = tmp_path / "b"
    assert not (partial / "world.json").exists() and (partial / "SYNTHETIC").exists()
    assert len(list((partial / ".synth" / "items").glob("*.json"))) == 4
    monkeypatch.setattr(world_module, "run_item", real_run_item)
    world_module.generate_world(partial, MICRO, seed=3, workers=1, progress=False)
    assert _snapshot(partial) == reference

    # A finished world is a no-op: nothing is rewritten.
    mtimes = {p: p.stat().st_mtime_ns for p in partial.rglob("*") if p.is_file()}
    world_module.generate_world(partial, MICRO, seed=3, workers=1, progress=False)
    assert mtimes == {p: p.stat().st_mtime_ns for p in partial.rglob("*") if p.is_file()}


def test_other_seed_differs_and_refuses_a_foreign_root(tmp_path):
    root = world_module.generate_world(tmp_path / "a", MICRO, seed=3, workers=1, progress=False)
    with pytest.raises(ValueError, match="different synthetic world"):
        world_module.generate_world(root, MICRO, seed=4, workers=1, progress=False)
    changed = dataclasses.replace(MICRO, shapenet=dataclasses.replace(MICRO.shapenet, models=5))
    with pytest.raises(ValueError, match="different synthetic world"):  # same name, new content
        world_module.generate_world(root, changed, seed=3, workers=1, progress=False)
    other = world_module.generate_world(tmp_path / "c", MICRO, seed=4, workers=1, progress=False)
    ids_a = json.loads((root / "shapenet_renders/synthetic/keypoints3d.json").read_text())
    ids_c = json.loads((other / "shapenet_renders/synthetic/keypoints3d.json").read_text())
    assert set(ids_a).isdisjoint(ids_c)


@pytest.mark.slow
def test_parallel_workers_give_the_same_bytes(tmp_path):
    serial = world_module.generate_world(tmp_path / "s", MICRO, seed=5, workers=1, progress=False)
    parallel = world_module.generate_world(
        tmp_path / "p", MICRO, seed=5, workers=2, progress=False
    )
    assert _snapshot(serial) == _snapshot(parallel)
