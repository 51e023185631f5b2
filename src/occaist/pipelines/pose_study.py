"""The sim-to-real pose study (seed 004) as one resumable command.

``python -m occaist.pipelines.pose_study [pose_budget=tiny|demo] [aist_ckpt=...] [key=value]``::

    world (BOP dataset: train_plain, train_dr, real-look test)
      ─► [stylize_bop: the plain and DR splits through an AIST generator, if aist_ckpt is set]
      ─► train every run (none, dr, dr + projection loss, [aist, dr_aist]) for every seed
      ─► evaluate every run on the real-look test split (ADD / ADD-S per object, baseline rows)
      ─► report: the seed's tables (sim_to_real.md, projection_loss.md, CSV beside them)

Every step is a :class:`~occaist.pipelines.stages.Stage` in ``study_dir/<stage>/``, skipped when
finished with the same config (upstream hashes included), so a killed study resumes where it
stopped; a killed training resumes from its ``last.ckpt``. Training and evaluation run the
user-facing commands (``python -m occaist.train`` / ``occaist.evaluate``) in subprocesses, so every
figure in the report can be reproduced by hand with the command in the stage's ``run.log``.
No model is selected on the test split: evaluation uses each run's last checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from occaist.pipelines.stages import Stage, run_stage
from occaist.schemas import register_schemas
from occaist.utils.logging import get_logger

log = get_logger(__name__)

BOP = Path("bop") / "occaist"
OBJECTS = {1: "toy car (complex)", 2: "box", 3: "cone (symmetric)"}


def _run(args: Sequence[str], log_file: Path) -> None:
    """Run ``python <args>``, output to ``log_file``; on failure raise with the log's tail."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, *args]
    log.info("$ %s", " ".join(cmd))
    with log_file.open("a") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n")
        handle.flush()
        result = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False)
    if result.returncode != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-40:])
        raise RuntimeError(f"command failed ({result.returncode}): {' '.join(cmd)}\n{tail}")


def _dirs(stage_dir: Path) -> list[str]:
    return [f"hydra.run.dir={stage_dir}", f"paths.output_dir={stage_dir}"]


def build_stages(cfg: DictConfig, study_dir: Path) -> list[Stage]:
    """The study's stages in run order (each stage's config includes its inputs' hashes)."""
    world = Path(cfg.world.root)
    stages: list[Stage] = []

    def add(stage: Stage) -> Stage:
        stages.append(stage)
        return stage

    world_stage = add(
        Stage(
            "world",
            {"root": str(world), "preset": cfg.world.preset, "seed": cfg.world.seed},
            lambda d: _generate_world(world, cfg.world.preset, cfg.world.seed, d),
            outputs=["world.json"],
        )
    )
    roots = {"world": world / BOP}
    upstream = {"world": world_stage.hash}
    if cfg.get("aist_ckpt"):
        stylized = study_dir / "stylize_bop" / BOP
        stage = add(
            Stage(
                "stylize_bop",
                {
                    "ckpt": str(cfg.aist_ckpt),
                    "splits": list(cfg.aist_splits),
                    "upstream": dict(upstream),
                },
                lambda d: _stylize_bop(
                    Path(cfg.aist_ckpt), world / BOP, stylized, d, list(cfg.aist_splits)
                ),
                outputs=["counts.json"],
            )
        )
        roots["stylized"] = stylized
        upstream["stylize_bop"] = stage.hash
    runs = {
        name: spec
        for name, spec in cfg.runs.items()
        if not spec.get("needs_aist") or "stylized" in roots
    }
    evals = []
    for seed in cfg.seeds:
        for name, spec in runs.items():
            root = roots["stylized" if spec.get("needs_aist") else "world"]
            overrides = [
                f"experiment={spec.experiment}",
                f"data.root={root}",
                f"seed={seed}",
                *spec.get("overrides", []),
                *cfg.train.overrides,
            ]
            src = "stylize_bop" if spec.get("needs_aist") else "world"
            train = add(_train_stage(f"train_{name}_s{seed}", overrides, {src: upstream[src]}))
            ckpt = study_dir / train.name / "checkpoints" / "last.ckpt"
            eval_overrides = [
                f"experiment={spec.experiment}",
                f"data.root={roots['world']}",
                f"ckpt_path={ckpt}",
                *cfg.eval.overrides,
            ]
            evals.append(
                add(_eval_stage(f"eval_{name}_s{seed}", eval_overrides, {train.name: train.hash}))
            )
    add(
        Stage(
            "report",
            {
                "upstream": {s.name: s.hash for s in evals},
                "runs": list(runs),
                "seeds": list(cfg.seeds),
            },
            lambda d: write_study_report(study_dir, d, list(runs), list(cfg.seeds)),
            outputs=["sim_to_real.md", "projection_loss.md"],
        )
    )
    return stages


def _train_stage(name: str, overrides: list[str], upstream: dict[str, str]) -> Stage:
    """A training run; resumes from its own ``last.ckpt`` after a kill."""

    def run(stage_dir: Path) -> None:
        last = stage_dir / "checkpoints" / "last.ckpt"
        resume = [f"ckpt_path={last}"] if last.is_file() else []
        _run(
            ["-m", "occaist.train", "test=false", *_dirs(stage_dir), *overrides, *resume],
            stage_dir / "run.log",
        )

    return Stage(
        name,
        {"overrides": overrides, "upstream": upstream},
        run,
        outputs=["checkpoints/last.ckpt"],
    )


def _eval_stage(name: str, overrides: list[str], upstream: dict[str, str]) -> Stage:
    """``python -m occaist.evaluate`` of one run on the real-look test split."""

    def run(stage_dir: Path) -> None:
        _run(["-m", "occaist.evaluate", *_dirs(stage_dir), *overrides], stage_dir / "run.log")

    return Stage(
        name,
        {"overrides": overrides, "upstream": upstream},
        run,
        outputs=["eval/pose_accuracy.json"],
    )


def _generate_world(root: Path, preset: str, seed: int, stage_dir: Path) -> None:
    from occaist.synth import generate_world

    generate_world(root, preset=preset, seed=seed)
    (stage_dir / "world.json").write_bytes((root / "world.json").read_bytes())


def _stylize_bop(
    ckpt: Path,
    src: Path,
    dst: Path,
    stage_dir: Path,
    splits: Sequence[str] = ("train_plain", "train_dr"),
    batch_size: int = 32,
) -> None:
    """A BOP copy whose ``<split>_aist`` splits hold G(x) of the ``splits``' images: the object
    (its visible mask as alpha) goes through the AIST generator and is composited back over the
    image's own background; masks and poses are copied unchanged. ``batch_size`` renders go
    through G at once, without autograd (37 ms an image at 64 px on one thread)."""
    import numpy as np
    import torch
    from PIL import Image

    from occaist.stylize import load_generator, stylize_batch

    generator, info = load_generator(ckpt)
    size = int(info["data"].get("image_size") or info["model"].get("image_size") or 128)
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in ("models", "test", "synthetic"):
        if (src / name).exists():
            shutil.copytree(src / name, dst / name)
    tmp = stage_dir / "rgba"
    tmp.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for split in splits:
        out_split = dst / f"{split}_aist"
        shutil.copytree(src / split, out_split)
        paths = sorted(out_split.glob("*/rgb/*.png"))
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            images, alphas, rgba = [], [], []
            for k, rgb_path in enumerate(chunk):
                scene, im = rgb_path.parents[1], rgb_path.stem
                with Image.open(rgb_path) as img:
                    images.append(np.asarray(img.convert("RGB")))
                with Image.open(scene / "mask_visib" / f"{im}_000000.png") as img:
                    alphas.append(np.asarray(img.convert("L")))
                rgba.append(tmp / f"{k}.png")
                Image.fromarray(np.dstack([images[-1], alphas[-1]]), "RGBA").save(rgba[-1])
            with torch.inference_mode():
                styled = stylize_batch(generator, rgba, size, torch.device("cpu"))
            for rgb_path, rgb, alpha, out in zip(chunk, images, alphas, styled, strict=True):
                a = alpha[..., None].astype(np.float32) / 255.0
                mixed = out[..., :3].astype(np.float32) * a + rgb.astype(np.float32) * (1 - a)
                Image.fromarray(mixed.round().clip(0, 255).astype(np.uint8)).save(rgb_path)
            counts[split] = counts.get(split, 0) + len(chunk)
    shutil.rmtree(tmp, ignore_errors=True)
    (stage_dir / "counts.json").write_text(json.dumps(counts, indent=2))


# ---------------------------------------------------------------------------- the report


def _accuracies(eval_dir: Path) -> dict[tuple[str, str], dict[str, float]]:
    """``(method, object) -> {"ADD", "ADD-S"}`` from one run's ``pose_accuracy.json``."""
    rows = json.loads((eval_dir / "pose_accuracy.json").read_text())
    return {(r["method"], str(r["object"])): {"ADD": r["ADD"], "ADD-S": r["ADD-S"]} for r in rows}


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 1)


def study_tables(study_dir: Path, runs: list[str], seeds: list[int]) -> dict[str, list[dict]]:
    """The seed's tables from the runs' evaluations (mean over seeds; per-seed values listed)."""
    acc = {
        (run, seed): _accuracies(study_dir / f"eval_{run}_s{seed}" / "eval")
        for run in runs
        for seed in seeds
    }
    objects = [*(str(o) for o in OBJECTS), "all"]

    def row(label: str, method: str, run: str) -> dict[str, Any]:
        out: dict[str, Any] = {"training data": label}
        for obj in objects:
            for metric in ("ADD", "ADD-S"):
                values = [acc[(run, s)][(method, obj)][metric] for s in seeds]
                key = f"{OBJECTS.get(int(obj), obj) if obj != 'all' else 'all'} {metric}"
                out[key] = _mean(values)
        if len(seeds) > 1:
            out["per seed (all ADD)"] = " / ".join(
                str(acc[(run, s)][(method, "all")]["ADD"]) for s in seeds
            )
        return out

    sim_to_real = [row(run, "model", run) for run in runs if not run.endswith("_pl")]
    if runs:
        sim_to_real.append(
            row(f"baseline: mean training pose ({runs[0]})", "mean training pose", runs[0])
        )
    projection = [
        row(run, "model", run) for run in runs if run in ("dr", "dr_pl", "none", "none_pl")
    ]
    return {"sim_to_real": sim_to_real, "projection_loss": projection}


def write_study_report(study_dir: Path, out_dir: Path, runs: list[str], seeds: list[int]) -> None:
    """``sim_to_real`` and ``projection_loss`` tables (Markdown, CSV, JSON) into ``out_dir``."""
    from occaist.evaluation import write_table

    for name, rows in study_tables(study_dir, runs, seeds).items():
        write_table(rows, out_dir / name, digits=1)


def run_study(cfg: DictConfig) -> dict[str, Any]:
    """Run (or resume) every stage; return ``{"study_dir", "ran", "skipped"}``."""
    study_dir = Path(cfg.study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "study_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    ran, skipped = [], []
    for stage in build_stages(cfg, study_dir):
        _, did_run = run_stage(stage, study_dir)
        (ran if did_run else skipped).append(stage.name)
        if cfg.get("stop_after") == stage.name:
            log.info("stop_after=%s: stopping here", stage.name)
            break
    return {"study_dir": str(study_dir), "ran": ran, "skipped": skipped}


register_schemas()


@hydra.main(version_base="1.3", config_path="../conf", config_name="pose_study.yaml")
def main(cfg: DictConfig) -> None:
    """``python -m occaist.pipelines.pose_study``: run or resume the study, print its tables."""
    result = run_study(cfg)
    report = Path(result["study_dir"]) / "report"
    from rich.console import Console

    console = Console(width=200, soft_wrap=True)
    for name in ("sim_to_real", "projection_loss"):
        table = report / f"{name}.md"
        if table.is_file():
            console.print(
                f"\n{name} (real-look test split, % under 10 % of the diameter)\n", markup=False
            )
            console.print(table.read_text(), markup=False, highlight=False)
    console.print(f"tables: {report}", markup=False, highlight=False)


if __name__ == "__main__":
    main()
