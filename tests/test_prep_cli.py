"""``python -m occaist.prep``: the Hydra config composes, validates, and runs from the shell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf.errors import ConfigKeyError, ValidationError

from occaist.prep.__main__ import _shard_flag_to_override, settings_from_config
from occaist.schemas import conf_dir
from tests.test_stanford_cars import make_cars_layout, make_renders


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir() / "prep"), version_base="1.3"):
        cfg = compose("prep", overrides=["data_dir=/data", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def test_config_composes_to_validated_settings():
    s = settings_from_config(_compose(["segmenter=maskrcnn", "filters.score.min=0.5"]))
    assert s.data_root == "/data/world/stanford_cars"
    assert s.ratio_fit.renders_root == "/data/world/shapenet_renders"
    assert s.filters.score.min == 0.5 and s.filters.box_size.min_sqrt_area == 128.0
    assert s.filters.cropping.max_covered == pytest.approx(1 / 3)
    assert s.segmenter["_target_"].endswith("MaskRCNNSegmenter")
    s = settings_from_config(_compose([]))
    assert s.segmenter["instances_file"] == "/data/world/stanford_cars/synthetic/instances.json"


def test_config_typos_and_types_fail():
    with pytest.raises(ConfigKeyError, match="mn"):
        settings_from_config(_compose(["+filters.score.mn=0.5"]))
    with pytest.raises(ValidationError, match="workers"):
        settings_from_config(_compose(["workers=many"]))


def test_shard_flag():
    assert _shard_flag_to_override(["x", "--shard", "2/4", "a=1"]) == ["x", "shard=2/4", "a=1"]
    assert _shard_flag_to_override(["--shard=1/3"]) == ["shard=1/3"]


def _snapshot(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".tmp" not in p.name
    }


@pytest.mark.slow
def test_sigkill_then_rerun_gives_identical_outputs(tmp_path: Path):
    """A real kill (SIGKILL, no clean-up at all) of the command, then the same command again."""
    from occaist.prep.pipeline import PrepSettings, run_prep

    world = tmp_path / "world"
    cars = make_cars_layout(world, {"train": ["good"] * 16 + ["mixed"], "test": ["good"] * 8})
    renders = make_renders(world)
    ref = tmp_path / "ref"
    s = PrepSettings(
        data_root=str(cars),
        out_dir=str(ref),
        batch_size=2,
        progress=False,
        segmenter={
            "_target_": "occaist.prep.segment.ProvidedSegmenter",
            "instances_file": str(cars / "synthetic" / "instances.json"),
        },
    )
    s.ratio_fit.renders_root = str(renders)
    run_prep(s)

    out = tmp_path / "killed"
    env = dict(os.environ, OCCAIST_LOGS=str(tmp_path / "logs"))
    cmd = [sys.executable, "-m", "occaist.prep", f"data_root={cars}", f"out_dir={out}",
           f"ratio_fit.renders_root={renders}", "progress=false", "batch_size=2"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / ".prep" / "records"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if records.is_dir() and sum(1 for _ in records.rglob("*.json")) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "report.json").exists()
    rerun = subprocess.run([*cmd, "--shard", "0/1"], env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["stages"]["accepted"] == 25
    assert _snapshot(out) == _snapshot(ref)
