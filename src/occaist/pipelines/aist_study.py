"""The AIST study (thesis chapter 6) as one resumable command.

``python -m occaist.pipelines.aist_study [budget=tiny|demo|paper] [key=value ...]``::

    world ─► prepare real segments ─► train AIST constrained / less constrained
          ─► stylize the synthetic renders with each (stylized-2, stylized-3)
          ─► train DPC on original, stylized-2, stylized-3
          ─► domain gap: each training set against the real segments (two-sample AUC, colour
             correlation, alpha IoU, montage; :mod:`occaist.pipelines.domain_gap`)
          ─► evaluate every DPC model on original, stylized-2, stylized-3 and real test sets
          ─► Table 6.2 (Markdown + CSV) with each training set's domain gap beside its rows,
             cumulative mask-XOR curves (Fig. 6.5), ``domain_gap.*`` and the montage

Every step is a :class:`~occaist.pipelines.stages.Stage` in ``study_dir/<stage>/``, skipped when
its manifest says it finished with the same config (upstream stages' hashes included), so a killed
study resumes where it stopped. Training and evaluation stages run the user-facing commands
(``python -m occaist.train`` / ``occaist.evaluate`` / ``occaist.prep`` / ``occaist.stylize``) in
subprocesses: what the study does is exactly what a user can rerun by hand, and a training stage
that was killed resumes from its ``last.ckpt``.

Budgets (``conf/budget/*.yaml``) name experiments instead of restating them: ``aist.experiment``
is layered on each AIST run's own experiment (``experiment=[aist_constrained,<it>]``) and
``dpc.experiment`` is the DPC training and evaluation experiment; their ``overrides`` hold only
what the budget changes. ``expected_minutes`` per stage kind gives the progress line's ETA.

The run prints ``stage k/N`` with the stage's expected time, a heartbeat with the running
stage's last progress line and the study's ETA, and a final summary (stage times, Table 6.2,
the domain gap, the report's paths). ``python -m occaist.pipelines.aist_study --dry-run`` (or
``dry_run=true``) lists the stages and whether each would be skipped or run, and why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from occaist.pipelines.report import write_report
from occaist.pipelines.stages import Stage, is_done, read_manifest, run_stage
from occaist.schemas import register_schemas
from occaist.utils.logging import get_logger

log = get_logger(__name__)

#: Display names of the study's datasets and models, in the thesis's order.
DATASETS = ("original", "stylized_2", "stylized_3", "real")
DPC_RUNS = {"baseline": "original", "experiment_2": "stylized_2", "experiment_3": "stylized_3"}
AIST_RUNS = {"stylized_2": "aist_constrained", "stylized_3": "aist_less_constrained"}


#: Seconds between two progress lines of a running stage.
HEARTBEAT_S = 30.0


def _last_progress(log_file: Path) -> str:
    """The last progress fragment of a stage log (after the last carriage return), trimmed."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(max(0, log_file.stat().st_size - 4096))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [part.strip() for part in tail.replace("\r", "\n").splitlines() if part.strip()]
    return lines[-1][-110:] if lines else ""


def _run(args: Sequence[str], log_file: Path) -> None:
    """Run ``python <args>``, output to ``log_file``; on failure raise with the log's tail.

    Every :data:`HEARTBEAT_S` seconds the running stage's last progress line is logged.
    """
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, *args]
    log.info("$ %s", " ".join(cmd))
    with log_file.open("a") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n")
        handle.flush()
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
        start = time.perf_counter()
        while True:
            try:
                returncode = process.wait(timeout=HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                _PROGRESS.heartbeat(
                    getattr(_STAGE, "name", "?"),
                    time.perf_counter() - start,
                    _last_progress(log_file),
                )
    if returncode != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-40:])
        raise RuntimeError(f"command failed ({returncode}): {' '.join(cmd)}\n{tail}")


class StudyProgress:
    """``stage k/N`` lines with expected times, heartbeats with the study's ETA, the summary."""

    def __init__(self) -> None:
        self.expected: dict[str, float] = {}
        self.names: list[str] = []
        self.jobs = 1
        self.started = time.perf_counter()
        self.times: dict[str, tuple[str, float]] = {}
        self.lock = threading.Lock()

    def plan(self, stages: Sequence[Stage], expected: dict[str, float], jobs: int) -> None:
        self.names = [stage.name for stage in stages]
        self.expected = expected
        self.jobs = max(1, jobs)
        self.started = time.perf_counter()
        self.times = {}

    def remaining_s(self, elapsed_in_current: float = 0.0) -> float:
        """Expected work left (stages not finished), shared by ``jobs`` processes."""
        left = sum(self.expected.get(n, 0.0) for n in self.names if n not in self.times)
        return max(0.0, left - elapsed_in_current) / self.jobs

    def begin(self, stage: Stage, done: bool) -> None:
        k, n = self.names.index(stage.name) + 1, len(self.names)
        if done:
            log.info("stage %d/%d %s: done already, skipped", k, n, stage.name)
            return
        log.info(
            "stage %d/%d %s: running (expected ~%s; study ETA %s)",
            k,
            n,
            stage.name,
            _clock(self.expected.get(stage.name, 0.0)),
            _clock(self.remaining_s()),
        )

    def end(self, stage: Stage, ran: bool, seconds: float) -> None:
        with self.lock:
            self.times[stage.name] = ("ran" if ran else "skipped", seconds)
        if ran:
            log.info(
                "stage %s finished in %s (%d/%d stages done; study ETA %s)",
                stage.name,
                _clock(seconds),
                len(self.times),
                len(self.names),
                _clock(self.remaining_s()),
            )

    def heartbeat(self, name: str, elapsed: float, progress: str) -> None:
        log.info(
            "  %s: %s elapsed of ~%s | %s | study ETA %s",
            name,
            _clock(elapsed),
            _clock(self.expected.get(name, 0.0)),
            progress or "(no progress line yet)",
            _clock(self.remaining_s(elapsed)),
        )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


_PROGRESS = StudyProgress()
#: The stage a worker thread is running (for its heartbeat lines).
_STAGE = threading.local()


def _hydra_run_dir(stage_dir: Path) -> list[str]:
    return [f"hydra.run.dir={stage_dir}", f"paths.output_dir={stage_dir}"]


def _experiments(*names: str | None) -> str:
    """``experiment=a`` or ``experiment=[a,b]`` (Hydra selects several options of one group)."""
    chosen = [n for n in names if n]
    return f"experiment={chosen[0]}" if len(chosen) == 1 else f"experiment=[{','.join(chosen)}]"


def _train_stage(
    name: str, experiment: str, overrides: list[str], upstream: dict[str, str]
) -> Stage:
    """A training run of ``experiment`` (``experiment=...`` value, a name or ``[a,b]``);
    resumes from its own ``last.ckpt`` after a kill.

    ``trainer.max_steps`` counts optimiser steps (two per batch for the CycleGAN). A resumed run
    restores its step and epoch counters, and its ``trainer.max_time`` clock: Lightning's Timer
    continues from the training time saved in ``last.ckpt`` (the time between that save and the
    kill is not counted), so a resumed stage gets only the rest of ``max_time``.
    """
    config = {"experiment": experiment, "overrides": overrides, "upstream": upstream}

    def run(stage_dir: Path) -> None:
        last = stage_dir / "checkpoints" / "last.ckpt"
        resume = [f"ckpt_path={last}"] if last.is_file() else []
        _run(
            [
                "-m",
                "occaist.train",
                experiment,
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
                _experiments(experiment, cfg.aist.get("experiment")),
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
    add(
        Stage(
            "domain_gap",
            {"upstream": upstream("prepare", "world", *(f"stylize_{d}" for d in AIST_RUNS))},
            lambda d: _domain_gap(renders, prepared, {k: roots[k] for k in AIST_RUNS}, d),
            outputs=["domain_gap.csv", "domain_gap_montage.png"],
        )
    )
    dpc_experiment = cfg.dpc.get("experiment") or "dpc_baseline"
    for run_name, dataset in DPC_RUNS.items():
        up = upstream(*(["world"] if dataset == "original" else [f"stylize_{dataset}"]))
        add(
            _train_stage(
                f"dpc_{run_name}",
                _experiments(dpc_experiment),
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
                        _experiments(dpc_experiment),
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
            {"upstream": upstream("domain_gap", *(f"eval_{run}" for run in DPC_RUNS))},
            lambda d: write_report(study_dir, d, DPC_RUNS, DATASETS),
            outputs=["table_6_2.md", "table_6_2.csv", "mask_xor_cdf.png", "domain_gap.md"],
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


def _domain_gap(renders: Path, prepared: Path, stylised: dict[str, Path], out: Path) -> None:
    from occaist.pipelines.domain_gap import domain_gap_report

    domain_gap_report(renders, prepared, stylised, out)


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


def _expected_seconds(cfg: DictConfig, stages: Sequence[Stage]) -> dict[str, float]:
    """Each stage's expected wall time from ``cfg.expected_minutes`` (keys: stage-name prefixes
    such as ``aist``, ``dpc``, ``eval``; the longest matching prefix wins)."""
    minutes = dict(cfg.get("expected_minutes") or {})
    out = {}
    for stage in stages:
        keys = [k for k in minutes if stage.name == k or stage.name.startswith(f"{k}_")]
        out[stage.name] = 60.0 * float(minutes[max(keys, key=len)]) if keys else 0.0
    return out


def expected_makespan(stages: Sequence[Stage], expected: dict[str, float], jobs: int) -> float:
    """Expected wall seconds of :func:`run_study`'s schedule (stages in order, each starting
    when its upstreams are done and one of ``jobs`` slots is free), for the given durations."""
    finish: dict[str, float] = {}
    slots = [0.0] * max(1, jobs)
    pending = list(stages)
    while pending:
        slot = min(range(len(slots)), key=slots.__getitem__)
        ready = [s for s in pending if _upstream_names(s) <= set(finish)]
        stage = min(
            ready,
            key=lambda s: max([finish[u] for u in _upstream_names(s)] + [slots[slot]]),
        )
        start = max([finish[u] for u in _upstream_names(stage)] + [slots[slot]])
        finish[stage.name] = slots[slot] = start + expected.get(stage.name, 0.0)
        pending.remove(stage)
    return max(finish.values(), default=0.0)


def plan_study(cfg: DictConfig) -> list[dict[str, Any]]:
    """What a run would do: one ``{"stage", "action", "why"}`` per stage (nothing is run).

    A stage is rerun when it never finished, when its config (or an upstream stage's) changed,
    or when an output is missing; stages after a rerun stage whose inputs change are rerun too
    (their config holds the upstream hashes).
    """
    study_dir = Path(cfg.study_dir)
    plan = []
    for stage in build_stages(cfg, study_dir):
        stage_dir = study_dir / stage.name
        manifest = read_manifest(stage_dir)
        if is_done(stage, stage_dir):
            action, why = "skip", "finished with this config"
        elif manifest is None:
            resumable = (stage_dir / "checkpoints" / "last.ckpt").is_file()
            action, why = "run", "resumes from last.ckpt" if resumable else "not finished yet"
        elif manifest.get("config_hash") != stage.hash:
            action, why = "rerun", "config or an upstream stage changed"
        else:
            action, why = "rerun", "an output is missing"
        plan.append({"stage": stage.name, "action": action, "why": why})
    return plan


def _upstream_names(stage: Stage) -> set[str]:
    return set((stage.config.get("upstream") or {}).keys())


def publish_prepared(prepared: Path, link: Path) -> None:
    """Make the study's prepared real segments the default real domain of the AIST experiments.

    ``experiment=aist_constrained`` reads ``data/prepared/real``; the study prepares into its own
    stage folder. A symbolic link ``link -> prepared`` is made when nothing is at ``link``; an
    existing folder or link elsewhere is left alone and named in the log.
    """
    target = prepared.resolve()
    if link.is_symlink() or link.exists():
        if link.resolve() != target:
            log.info("%s exists and is not this study's segments (%s): left alone", link, target)
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    log.info("prepared real segments: %s -> %s (read by experiment=aist_*)", link, target)


def run_study(cfg: DictConfig) -> dict[str, Any]:
    """Run (or resume) every stage; return ``{"study_dir", "ran", "skipped", "seconds"}``.

    With ``jobs`` > 1, a stage starts as soon as the stages it reads from (its config's
    ``upstream``) are finished, up to ``jobs`` at a time (each training uses one thread), so on
    two cores the DPC baseline trains while AIST does, and the two stylised DPC runs together.
    ``stop_after`` runs the stages up to that one (in the listed order) and stops.
    """
    study_dir = Path(cfg.study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "study_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    stages = build_stages(cfg, study_dir)
    names = [stage.name for stage in stages]
    if cfg.get("stop_after") in names:
        stages = stages[: names.index(cfg.stop_after) + 1]
    jobs = int(cfg.get("jobs") or 1)
    _PROGRESS.plan(stages, _expected_seconds(cfg, stages), jobs)
    ran, skipped, seconds = [], [], {}

    def one(stage: Stage) -> bool:
        _STAGE.name = stage.name
        _PROGRESS.begin(stage, is_done(stage, study_dir / stage.name))
        start = time.perf_counter()
        _, did_run = run_stage(stage, study_dir)
        seconds[stage.name] = round(time.perf_counter() - start, 1)
        _PROGRESS.end(stage, did_run, seconds[stage.name])
        return did_run

    pending, finished = list(stages), set()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[Future, Stage] = {}
        while pending or running:
            for stage in [s for s in pending if _upstream_names(s) <= finished]:
                if len(running) >= jobs:
                    break
                pending.remove(stage)
                running[pool.submit(one, stage)] = stage
            if not running:
                waiting = [s.name for s in pending]
                raise RuntimeError(f"stages wait on unknown upstreams: {waiting}")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                stage = running.pop(future)
                (ran if future.result() else skipped).append(stage.name)
                finished.add(stage.name)
    if "prepare" in finished and cfg.get("publish_prepared"):
        publish_prepared(study_dir / "prepare" / "real", Path(cfg.publish_prepared))
    if cfg.get("stop_after"):
        log.info("stop_after=%s: stopped there", cfg.stop_after)
    order = {name: i for i, name in enumerate(names)}
    return {
        "study_dir": str(study_dir),
        "ran": sorted(ran, key=order.get),
        "skipped": sorted(skipped, key=order.get),
        "seconds": {name: seconds[name] for name in names if name in seconds},
    }


def summary_text(result: dict[str, Any]) -> str:
    """The closing summary: stage times, Table 6.2, the domain gap and where the report is."""
    report = Path(result["study_dir"]) / "report"
    lines = ["", "AIST study finished.", "stage times:"]
    for name, secs in result.get("seconds", {}).items():
        state = "ran" if name in result["ran"] else "skipped"
        lines.append(f"  {name:<22} {state:<8} {_clock(secs)}")
    total = sum(result.get("seconds", {}).values())
    lines.append(f"  {'total':<22} {'':<8} {_clock(total)}")
    for name, title in (("table_6_2.md", "Table 6.2"), ("domain_gap.md", "Domain gap")):
        if (report / name).is_file():
            lines += ["", f"{title} ({report / name}):", (report / name).read_text()]
    figures = sorted(str(p) for p in report.glob("*.png")) if report.is_dir() else []
    lines += ["figures:", *(f"  {f}" for f in figures), f"report: {report}"]
    return "\n".join(lines)


register_schemas()


@hydra.main(version_base="1.3", config_path="../conf", config_name="aist_study.yaml")
def main(cfg: DictConfig) -> None:
    """``python -m occaist.pipelines.aist_study``: run or resume the study, print the summary."""
    from rich.console import Console

    console = Console(width=200, soft_wrap=True)
    if cfg.get("dry_run"):
        plan = plan_study(cfg)
        expected = _expected_seconds(cfg, build_stages(cfg, Path(cfg.study_dir)))
        lines = [f"study {cfg.study_dir}: {len(plan)} stages (dry run, nothing is run)"]
        for k, item in enumerate(plan, start=1):
            lines.append(
                f"  {k:>2}/{len(plan)} {item['stage']:<22} {item['action']:<6} "
                f"~{_clock(expected.get(item['stage'], 0.0)):>6}  {item['why']}"
            )
        todo = {i["stage"]: expected.get(i["stage"], 0.0) for i in plan if i["action"] != "skip"}
        jobs = int(cfg.get("jobs") or 1)
        stages = build_stages(cfg, Path(cfg.study_dir))
        lines.append(
            f"expected wall time of the stages to run, {jobs} at a time: "
            f"~{_clock(expected_makespan(stages, todo, jobs))} (one at a time: "
            f"~{_clock(sum(todo.values()))})"
        )
        console.print("\n".join(lines), markup=False, highlight=False)
        return
    result = run_study(cfg)
    console.print(summary_text(result), markup=False, highlight=False)


def _cli() -> None:
    """``--dry-run`` is accepted as a flag (it becomes ``dry_run=true``)."""
    if "--dry-run" in sys.argv:
        sys.argv = [a for a in sys.argv if a != "--dry-run"] + ["dry_run=true"]
    main()


if __name__ == "__main__":
    _cli()
