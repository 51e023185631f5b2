"""Resumable multi-stage studies: each stage is skipped when its outputs exist for the same config.

A stage owns one directory ``<study>/<stage name>/``. When it finishes, the runner writes
``stage.json`` there (atomically, last): the SHA-256 of the stage's resolved config, the config
itself, the declared outputs, the wall time and the CPU time (this process and the subprocesses
it waited for: CPU budgets are counted in it, since wall time on a shared machine is not; exact
when stages run one at a time, as in the pose study; with parallel jobs the subprocesses of
overlapping stages that end in the window count too). On the next run a stage whose manifest
has the same hash and whose outputs all exist is skipped; any other state (no manifest, another
config, missing outputs) reruns it, and a stage that can resume itself (a training run with
``last.ckpt``) does so. A study killed anywhere therefore resumes at the first unfinished stage.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from occaist.utils.io import write_json_atomic
from occaist.utils.logging import get_logger

log = get_logger(__name__)

MANIFEST = "stage.json"
#: Written when a stage starts: the hash of the config its partial outputs belong to.
STARTED = "stage.started.json"


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the config as canonical JSON (sorted keys), the identity of a stage's work."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Stage:
    """One step of a study.

    Attributes:
        name: directory name of the stage inside the study directory.
        config: everything that determines the stage's outputs (JSON-serialisable); upstream
            stages' hashes belong here so that a changed input reruns the stage.
        run: ``run(stage_dir)`` does the work and writes the outputs into ``stage_dir``.
        outputs: paths relative to ``stage_dir`` that must exist after ``run``.
    """

    name: str
    config: dict[str, Any]
    run: Callable[[Path], None]
    outputs: Sequence[str] = field(default_factory=tuple)

    @property
    def hash(self) -> str:
        return config_hash(self.config)


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The finished stage's manifest, or ``None`` when the stage never completed."""
    return _read_json(stage_dir / MANIFEST)


def is_done(stage: Stage, stage_dir: Path) -> bool:
    """Whether ``stage_dir`` holds this stage's finished outputs for exactly this config."""
    manifest = read_manifest(stage_dir)
    return (
        manifest is not None
        and manifest.get("config_hash") == stage.hash
        and all((stage_dir / out).exists() for out in stage.outputs)
    )


def _move_aside_other_config(stage: Stage, stage_dir: Path) -> None:
    """Move a stage directory holding another config's (partial) outputs out of the way."""
    if not stage_dir.exists():
        return
    old = read_manifest(stage_dir) or _read_json(stage_dir / STARTED)
    old_hash = (old or {}).get("config_hash")
    if old_hash == stage.hash or (old is None and not any(stage_dir.iterdir())):
        return
    target = stage_dir.parent / ".stale" / f"{stage.name}-{str(old_hash)[:10]}"
    suffix = 0
    while target.exists():
        suffix += 1
        target = target.with_name(f"{stage.name}-{str(old_hash)[:10]}-{suffix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    stage_dir.rename(target)
    log.info(
        "stage %s: config changed (%s -> %s); old outputs moved to %s",
        stage.name,
        str(old_hash)[:10],
        stage.hash[:10],
        target,
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its waited-for children."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_stage(stage: Stage, study_dir: Path) -> tuple[Path, bool]:
    """Run ``stage`` unless it is done; return its directory and whether it ran now."""
    stage_dir = Path(study_dir) / stage.name
    if is_done(stage, stage_dir):
        log.info("stage %-24s done already (config %s): skipped", stage.name, stage.hash[:10])
        return stage_dir, False
    _move_aside_other_config(stage, stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stage_dir / STARTED, {"stage": stage.name, "config_hash": stage.hash})
    log.info("stage %-24s running (config %s)", stage.name, stage.hash[:10])
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    stage.run(stage_dir)
    missing = [out for out in stage.outputs if not (stage_dir / out).exists()]
    if missing:
        raise RuntimeError(f"stage {stage.name!r} finished without its outputs {missing}")
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    write_json_atomic(
        stage_dir / MANIFEST,
        {
            "stage": stage.name,
            "config_hash": stage.hash,
            "config": stage.config,
            "outputs": list(stage.outputs),
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    log.info("stage %-24s finished in %.1f s (%.1f s of CPU time)", stage.name, seconds, cpu)
    return stage_dir, True
