"""The AIST study (thesis chapter 6) as one resumable command.

``python -m occaist.pipelines.aist_study [budget=tiny|demo|paper] [key=value ...]``::

    world ─► prepare real segments ─► train AIST constrained / less constrained
          ─► stylize the synthetic renders with each (stylized-2, stylized-3)
          ─► train DPC on original, stylized-2, stylized-3
          ─► evaluate every DPC model on original, stylized-2, stylized-3 and real test sets
          ─► Table 6.2 (Markdown + CSV), cumulative mask-XOR curves (Fig. 6.5), real-set pose

Every step is a :class:`~occaist.pipelines.stages.Stage` in ``study_dir/<stage>/``, skipped when
its manifest says it finished with the same config (upstream stages' hashes included), so a killed
study resumes where it stopped. Training and evaluation stages run the user-facing commands
(``python -m occaist.train`` / ``occaist.evaluate`` / ``occaist.prep`` / ``occaist.stylize``) in
subprocesses: what the study does is exactly what a user can rerun by hand, and a training stage
that was killed resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from occaist.pipelines.report import write_report
from occaist.pipelines.stages import Stage, run_stage
from occaist.schemas import register_schemas
from occaist.utils.logging import get_logger

log = get_logger(__name__)

#: Display names of the study's datasets and models, in the thesis's order.
DATASETS = ("original", "stylized_2", "stylized_3", "real")
DPC_RUNS = {"baseline": "original", "experiment_2": "stylized_2", "experiment_3": "stylized_3"}
AIST_RUNS = {"stylized_2": "aist_constrained", "stylized_3": "aist_less_constrained"}


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


def _hydra_run_dir(stage_dir: Path) -> list[str]:
    return [f"hydra.run.dir={stage_dir}", f"paths.output_dir={stage_dir}"]


def _train_stage(
    name: str, experiment: str, overrides: list[str], upstream: dict[str, str]
) -> Stage:
    """A training run of ``experiment``; resumes from its own ``last.ckpt`` after a kill."""
    config = {"experiment": experiment, "overrides": overrides, "upstream": upstream}

    def run(stage_dir: Path) -> None:
        last = stage_dir / "checkpoints" / "last.ckpt"
        resume = [f"ckpt_path={last}"] if last.is_file() else []
        _run(
            [
                "-m",
                "occaist.train",
                f"experiment={experiment}",
                "test=false",
                *_hydra_run_dir(stage_dir),
                *overrides,
                *resume,
            ],
            stage_dir / "run.log",
        )

    return Stage(name, config, run, outputs=["checkpoints/last.ckpt"])


def _eval_stage(
    name: str, ckpt: Path, roots: dict[str, Path], spec: dict[str, Any], upstream: dict[str, str]
) -> Stage:
    """Evaluate ``ckpt`` on every test set in ``roots`` (one process, one folder per set)."""
    config = {
        "ckpt": str(ckpt),
        "roots": {k: str(v) for k, v in roots.items()},
        **spec,
        "upstream": upstream,
    }

    def run(stage_dir: Path) -> None:
        spec_file = stage_dir / "spec.json"
        spec_file.write_text(json.dumps({**config, "out_dir": str(stage_dir)}, indent=2))
        _run(["-m", "occaist.pipelines.evaluate_many", str(spec_file)], stage_dir / "run.log")

    return Stage(name, config, run, outputs=[f"{d}/eval/summary_test.json" for d in roots])


def build_stages(cfg: DictConfig, study_dir: Path) -> list[Stage]:
    """The study's stages in run order (each stage's config includes its inputs' hashes)."""
    world = Path(cfg.world.root)
    renders = world / "shapenet_renders"
    stages: list[Stage] = []

    def add(stage: Stage) -> Stage:
        stages.append(stage)
        return stage

    def upstream(*names: str) -> dict[str, str]:
        by_name = {s.name: s for s in stages}
        return {n: by_name[n].hash for n in names}

    world_stage = add(
        Stage(
            "world",
            {"root": str(world), "preset": cfg.world.preset, "seed": cfg.world.seed},
            lambda d: _generate_world(world, cfg.world.preset, cfg.world.seed, d),
            outputs=["world.json"],
        )
    )
    prepared = study_dir / "prepare" / "real"
    add(
        Stage(
            "prepare",
            {"overrides": list(cfg.prep.overrides), "upstream": {"world": world_stage.hash}},
            lambda d: _run(
                [
                    "-m",
                    "occaist.prep",
                    f"data_root={world / 'stanford_cars'}",
                    f"out_dir={prepared}",
                    f"ratio_fit.renders_root={renders}",
                    f"hydra.run.dir={d}",
                    *cfg.prep.overrides,
                ],
                d / "run.log",
            ),
            outputs=["real/report.json", "real/manifest.csv"],
        )
    )
    real_root = study_dir / "real_test_set" / "shapenet_renders"
    add(
        Stage(
            "real_test_set",
            {"upstream": upstream("prepare", "world")},
            lambda d: _write_real_test_set(prepared, renders, real_root, d),
            outputs=["shapenet_renders/renders/02958343_test.txt"],
        )
    )
    roots = {"original": renders, "real": real_root}
    for dataset, experiment in AIST_RUNS.items():
        aist = add(
            _train_stage(
                f"aist_{dataset}",
                experiment,
                [
                    f"data.renders_root={renders}",
                    f"data.prepared_root={prepared}",
                    *cfg.aist.overrides,
                ],
                upstream("prepare", "world"),
            )
        )
        dst = study_dir / f"stylize_{dataset}" / "shapenet_renders"
        roots[dataset] = dst
        add(
            Stage(
                f"stylize_{dataset}",
                {"overrides": list(cfg.stylize.overrides), "upstream": {aist.name: aist.hash}},
                _stylize_runner(
                    study_dir / aist.name / "checkpoints" / "last.ckpt",
                    renders,
                    dst,
                    list(cfg.stylize.overrides),
                ),
                outputs=["shapenet_renders/manifest.json"],
            )
        )
    for run_name, dataset in DPC_RUNS.items():
        up = upstream(*(["world"] if dataset == "original" else [f"stylize_{dataset}"]))
        add(
            _train_stage(
                f"dpc_{run_name}",
                "dpc_baseline",
                [f"data.root={roots[dataset]}", *cfg.dpc.overrides],
                up,
            )
        )
    # evaluation builds the model from the eval config: repeat the training's model settings
    model_overrides = [o for o in cfg.dpc.overrides if o.startswith(("model.", "data.image_size"))]
    for run_name in DPC_RUNS:
        ckpt = study_dir / f"dpc_{run_name}" / "checkpoints" / "last.ckpt"
        data_stages = ["real_test_set", "world", *(f"stylize_{d}" for d in AIST_RUNS)]
        add(
            _eval_stage(
                f"eval_{run_name}",
                ckpt,
                {d: roots[d] for d in DATASETS},
                {
                    "overrides": [
                        "experiment=dpc_baseline",
                        *model_overrides,
                        *cfg.eval.overrides,
                    ],
                    "per_root_overrides": {"real": list(cfg.eval.real_overrides)},
                },
                upstream(f"dpc_{run_name}", *data_stages),
            )
        )
    add(
        Stage(
            "report",
            {"upstream": upstream(*(f"eval_{run}" for run in DPC_RUNS))},
            lambda d: write_report(study_dir, d, DPC_RUNS, DATASETS),
            outputs=["table_6_2.md", "table_6_2.csv", "mask_xor_cdf.png"],
        )
    )
    return stages


def _generate_world(root: Path, preset: str, seed: int, stage_dir: Path) -> None:
    from occaist.synth import generate_world

    generate_world(root, preset=preset, seed=seed)
    (stage_dir / "world.json").write_bytes((root / "world.json").read_bytes())


def _write_real_test_set(prepared: Path, renders: Path, out: Path, stage_dir: Path) -> None:
    from occaist.pipelines.real_segments import write_real_as_dpc

    counts = write_real_as_dpc(prepared, renders, out)
    (stage_dir / "counts.json").write_text(json.dumps(counts, indent=2))


def _stylize_runner(ckpt: Path, src: Path, dst: Path, overrides: list[str]):
    def run(stage_dir: Path) -> None:
        _run(
            [
                "-m",
                "occaist.stylize",
                f"ckpt={ckpt}",
                f"src={src}",
                f"dst={dst}",
                f"hydra.run.dir={stage_dir}",
                *overrides,
            ],
            stage_dir / "run.log",
        )

    return run


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


@hydra.main(version_base="1.3", config_path="../conf", config_name="aist_study.yaml")
def main(cfg: DictConfig) -> None:
    """``python -m occaist.pipelines.aist_study``: run or resume the study, print Table 6.2."""
    result = run_study(cfg)
    table = Path(result["study_dir"]) / "report" / "table_6_2.md"
    if table.is_file():
        from rich.console import Console

        console = Console(width=200, soft_wrap=True)
        console.print(table.read_text(), markup=False, highlight=False)
        console.print(f"figures and tables: {table.parent}", markup=False, highlight=False)


if __name__ == "__main__":
    main()
