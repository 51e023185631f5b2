"""``python -m occaist.prep``: the Hydra config composes, validates, and runs from the shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
        cfg = compose("prep", overrides=["data_dir=/data/world", *overrides])
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


@pytest.mark.slow
def test_command_line_run(tmp_path: Path):
    cars = make_cars_layout(tmp_path / "world")
    make_renders(tmp_path / "world")
    out = tmp_path / "prepared"
    env = dict(os.environ, OCCAIST_LOGS=str(tmp_path / "logs"))
    cmd = [sys.executable, "-m", "occaist.prep", f"data_dir={tmp_path / 'world'}",
           f"out_dir={out}", "progress=false", "--shard", "0/1"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["stages"]["accepted"] == 5
    assert cars.is_dir() and (out / "manifest.csv").is_file()
