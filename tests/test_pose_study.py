"""The pose study pipeline: stages, AIST stylisation of the BOP splits, the report's tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from occaist.pipelines.pose_study import _stylize_bop, build_stages, run_study, study_tables
from occaist.utils.compose import composed


def _cfg(overrides: list[str], output_dir: Path | None = None):
    return composed(["pose_budget=tiny", *overrides], "pose_study.yaml", output_dir=output_dir)


def test_stages_without_and_with_an_aist_generator(tmp_path: Path) -> None:
    with _cfg([f"world.root={tmp_path / 'w'}", "seeds=[1,2]"]) as cfg:
        names = [s.name for s in build_stages(cfg, tmp_path)]
    assert names[0] == "world" and names[-1] == "report"
    assert {"train_none_s1", "eval_dr_pl_s2"} <= set(names) and "stylize_bop" not in names
    assert not any("aist" in n for n in names)
    with _cfg([f"world.root={tmp_path / 'w'}", f"aist_ckpt={tmp_path / 'G.ckpt'}"]) as cfg:
        stages = build_stages(cfg, tmp_path)
    by_name = {s.name: s for s in stages}
    assert "stylize_bop" in by_name and "train_dr_aist_s12345" in by_name
    assert by_name["stylize_bop"].config["splits"] == ["train_plain"]  # what aist runs train on
    train = by_name["train_aist_s12345"]
    assert "stylize_bop" in train.config["upstream"]
    assert any("stylize_bop" in o for o in train.config["overrides"])
    evaluation = by_name["eval_aist_s12345"].config["overrides"]
    assert (
        f"data.root={tmp_path / 'w' / 'bop' / 'occaist'}" in evaluation
    )  # tested on the real look


def _tiny_aist_checkpoint(path: Path) -> Path:
    from occaist.models.aist.networks import ResnetGenerator

    torch.manual_seed(0)
    spec = {"_target_": "occaist.models.aist.networks.ResnetGenerator", "_partial_": True,
            "base_channels": 4, "num_blocks": 1, "activation": "relu"}  # fmt: skip
    g = ResnetGenerator(3, 3, base_channels=4, num_blocks=1, activation="relu")
    state = {f"G.{k}": v for k, v in g.state_dict().items()}
    hp = {"alpha_mode": "proxy_soft", "generator": spec}
    torch.save({"hyper_parameters": hp, "state_dict": state,
                "datamodule_hyper_parameters": {"image_size": 32}}, path)  # fmt: skip
    return path


def test_stylize_bop_changes_only_the_objects_pixels(tiny_world: Path, tmp_path: Path) -> None:
    src = tiny_world / "bop" / "occaist"
    dst = tmp_path / "out" / "bop" / "occaist"
    (tmp_path / "stage").mkdir()
    _stylize_bop(_tiny_aist_checkpoint(tmp_path / "G.ckpt"), src, dst, tmp_path / "stage")
    counts = json.loads((tmp_path / "stage" / "counts.json").read_text())
    assert counts == {"train_plain": 12, "train_dr": 12}
    scene = "train_dr/000002"
    before = np.asarray(Image.open(src / scene / "rgb" / "000001.png"), dtype=int)
    after = np.asarray(Image.open(dst / "train_dr_aist/000002/rgb/000001.png"), dtype=int)
    mask = np.asarray(Image.open(src / scene / "mask_visib" / "000001_000000.png")) > 0
    assert np.array_equal(after[~mask], before[~mask])  # the DR background is kept
    assert np.abs(after[mask] - before[mask]).mean() > 5  # the object went through G
    for name in ("scene_gt.json", "scene_camera.json", "mask_visib/000001_000000.png"):
        assert (dst / "train_dr_aist/000002" / name).read_bytes() == (
            src / scene / name
        ).read_bytes()
    assert (dst / "test").is_dir() and (dst / "models" / "models_info.json").is_file()
    # images go through G in batches; a batch gives each image what it gives it alone
    one = tmp_path / "one" / "bop" / "occaist"
    (tmp_path / "stage1").mkdir()
    _stylize_bop(tmp_path / "G.ckpt", src, one, tmp_path / "stage1", ["train_dr"], batch_size=1)
    assert json.loads((tmp_path / "stage1" / "counts.json").read_text()) == {"train_dr": 12}
    assert not (one / "train_plain_aist").exists()
    for path in sorted((dst / "train_dr_aist").glob("*/rgb/*.png")):
        single = np.asarray(Image.open(one / path.relative_to(dst)), dtype=int)
        assert np.abs(single - np.asarray(Image.open(path), dtype=int)).max() <= 1


def _fake_eval(study: Path, run: str, seed: int, add: float) -> None:
    rows = [
        {"method": m, "object": o, "n": 4, "ADD": add if m == "model" else 1.0, "ADD-S": add + 5}
        for m in ("model", "mean training pose")
        for o in (1, 2, 3, "all")
    ]
    (study / f"eval_{run}_s{seed}" / "eval").mkdir(parents=True)
    (study / f"eval_{run}_s{seed}" / "eval" / "pose_accuracy.json").write_text(json.dumps(rows))


def test_report_tables_average_seeds(tmp_path: Path) -> None:
    for run, base in (("none", 0.0), ("dr", 40.0), ("dr_pl", 50.0)):
        for seed, delta in ((1, 0.0), (2, 10.0)):
            _fake_eval(tmp_path, run, seed, base + delta)
    tables = study_tables(tmp_path, ["none", "dr", "dr_pl"], [1, 2])
    rows = {r["training data"]: r for r in tables["sim_to_real"]}
    assert set(rows) == {"none", "dr", "baseline: mean training pose (none)"}
    assert rows["dr"]["all ADD"] == 45.0 and rows["dr"]["cone (symmetric) ADD-S"] == 50.0
    assert rows["dr"]["per seed (all ADD)"] == "40.0 / 50.0"
    assert rows["baseline: mean training pose (none)"]["box ADD"] == 1.0
    assert [r["training data"] for r in tables["projection_loss"]] == ["none", "dr", "dr_pl"]


@pytest.mark.slow
def test_tiny_study_runs_and_resumes(tiny_world: Path, tmp_path: Path) -> None:
    overrides = [f"world.root={tiny_world}", f"study_dir={tmp_path}",
                 "~runs.dr", "~runs.dr_pl"]  # fmt: skip
    with _cfg(overrides, output_dir=tmp_path / "hydra") as cfg:
        first = run_study(cfg)
        second = run_study(cfg)
    assert first["ran"] == ["world", "train_none_s12345", "eval_none_s12345", "report"]
    assert second["ran"] == [] and len(second["skipped"]) == 4
    assert "| none |" in (tmp_path / "report" / "sim_to_real.md").read_text()
