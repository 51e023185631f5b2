"""The stage runner at study level, with small fake stages whose runs are counted.

A fake three-stage study (prep -> train -> eval) is built the way the real studies build theirs:
each stage's config holds the keys that change its outputs plus the hash of the stage before it,
while runtime-only settings (``workers``) are passed to the run but kept out of the config.
Changing one key must rerun exactly that stage and the ones after it; a runtime-only key reruns
nothing. A training stage killed (SIGKILL, in a subprocess) after writing ``last.ckpt`` resumes
from it in a fresh process.

Planted bugs these tests kill: ``is_done`` with ``any`` instead of ``all`` over the outputs, a
manifest written before the outputs are checked, a stage skipped on a changed config.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from occaist.pipelines.stages import (
    MANIFEST,
    STARTED,
    Stage,
    config_hash,
    is_done,
    read_manifest,
    run_stage,
)

BUDGET = {
    "prep": {"image_size": 32, "workers": 1},
    "train": {"steps": 3, "lr": 0.1},
    "eval": {"split": "test"},
}
RUNTIME_KEYS = {"workers"}


def _study(budget: dict, study_dir: Path, ran: list[str]) -> dict[str, Path]:
    """Run the fake study; ``ran`` collects the names of the stages that ran now."""

    def stage_config(name: str, upstream: Stage | None) -> dict:
        config = {k: v for k, v in budget[name].items() if k not in RUNTIME_KEYS}
        if upstream is not None:
            config["upstream"] = upstream.hash
        return config

    def prep(stage_dir: Path) -> None:
        # budget["prep"]["workers"] would set the parallelism here: same files for any value
        (stage_dir / "images.txt").write_text(f"size {budget['prep']['image_size']}\n")
        (stage_dir / "report.json").write_text(json.dumps({"images": 1}))

    def train(stage_dir: Path) -> None:
        (stage_dir / "last.ckpt").write_text(json.dumps(budget["train"]))

    def evaluate(stage_dir: Path) -> None:
        (stage_dir / "summary.json").write_text(json.dumps(budget["eval"]))

    stages = []
    upstream = None
    for name, run, outputs in (
        ("prep", prep, ["images.txt", "report.json"]),
        ("train", train, ["last.ckpt"]),
        ("eval", evaluate, ["summary.json"]),
    ):
        stage = Stage(name, stage_config(name, upstream), run, outputs)
        stages.append(stage)
        upstream = stage
    dirs = {}
    for stage in stages:
        stage_dir, did_run = run_stage(stage, study_dir)
        dirs[stage.name] = stage_dir
        if did_run:
            ran.append(stage.name)
    return dirs


def _with(section: str, key: str, value) -> dict:
    budget = json.loads(json.dumps(BUDGET))
    budget[section][key] = value
    return budget


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("prep", "image_size", 64, ["prep", "train", "eval"]),
        ("train", "steps", 4, ["train", "eval"]),
        ("train", "lr", 0.2, ["train", "eval"]),
        ("eval", "split", "val", ["eval"]),
        ("prep", "workers", 2, []),
    ],
)
def test_one_changed_key_reruns_exactly_the_affected_stages(
    tmp_path: Path, section: str, key: str, value, expected: list[str]
) -> None:
    first: list[str] = []
    _study(BUDGET, tmp_path, first)
    assert first == ["prep", "train", "eval"]
    again: list[str] = []
    _study(BUDGET, tmp_path, again)
    assert again == []
    changed: list[str] = []
    _study(_with(section, key, value), tmp_path, changed)
    assert changed == expected
    # back to the first budget: the stages that reran rerun once more, the others stay done
    back: list[str] = []
    _study(BUDGET, tmp_path, back)
    assert back == expected


def test_a_stage_with_one_of_several_outputs_missing_is_not_done(tmp_path: Path) -> None:
    ran: list[str] = []
    dirs = _study(BUDGET, tmp_path, ran)
    (dirs["prep"] / "report.json").unlink()  # images.txt is still there
    stage = Stage("prep", {"image_size": 32}, lambda d: None, ["images.txt", "report.json"])
    assert not is_done(stage, dirs["prep"])
    ran.clear()
    _study(BUDGET, tmp_path, ran)
    assert ran == ["prep"]  # its config is unchanged, so train and eval stay done
    assert (dirs["prep"] / "report.json").exists()


def test_is_done_needs_the_manifest_the_same_hash_and_every_output(tmp_path: Path) -> None:
    stage = Stage("s", {"a": 1}, lambda d: None, ["x.txt", "y.txt", "sub/z.txt"])
    stage_dir = tmp_path / "s"
    (stage_dir / "sub").mkdir(parents=True)
    for name in ("x.txt", "y.txt", "sub/z.txt"):
        (stage_dir / name).write_text("")
    assert not is_done(stage, stage_dir)  # no manifest
    (stage_dir / MANIFEST).write_text(json.dumps({"config_hash": stage.hash}))
    assert is_done(stage, stage_dir)
    assert not is_done(Stage("s", {"a": 2}, lambda d: None, stage.outputs), stage_dir)
    for name in ("x.txt", "y.txt", "sub/z.txt"):
        (stage_dir / name).rename(stage_dir / f"{name}.away")
        assert not is_done(stage, stage_dir), name
        (stage_dir / f"{name}.away").rename(stage_dir / name)
    (stage_dir / MANIFEST).write_text("{not json")
    assert not is_done(stage, stage_dir)
    assert read_manifest(stage_dir) is None


def test_a_stage_missing_one_of_several_outputs_fails_without_a_manifest(tmp_path: Path) -> None:
    def run(stage_dir: Path) -> None:
        (stage_dir / "a.txt").write_text("")

    stage = Stage("s", {}, run, ["a.txt", "b.txt"])
    with pytest.raises(RuntimeError, match=r"b\.txt") as err:
        run_stage(stage, tmp_path)
    assert "a.txt" not in str(err.value)
    assert not (tmp_path / "s" / MANIFEST).exists()
    started = json.loads((tmp_path / "s" / STARTED).read_text())
    assert started == {"stage": "s", "config_hash": stage.hash}


def test_manifest_records_the_config_outputs_and_time(tmp_path: Path) -> None:
    stage = Stage("s", {"b": [1, 2], "a": "x"}, lambda d: (d / "o").write_text(""), ["o"])
    stage_dir, ran = run_stage(stage, tmp_path)
    assert ran and stage_dir == tmp_path / "s"
    manifest = read_manifest(stage_dir)
    assert manifest["stage"] == "s"
    assert manifest["config"] == {"b": [1, 2], "a": "x"}
    assert manifest["config_hash"] == stage.hash
    assert manifest["outputs"] == ["o"]
    assert manifest["seconds"] >= 0


TRAINING_SCRIPT = """
import json, os, signal, sys
from pathlib import Path
from occaist.pipelines.stages import Stage, run_stage

study, total, kill_after = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def train(stage_dir):
    ckpt = stage_dir / "last.ckpt"
    step = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    with open(stage_dir / "steps.log", "a") as log:
        log.write(f"start {step}\\n")
        while step < total:
            step += 1
            log.write(f"step {step}\\n")
            log.flush()
            tmp = stage_dir / "last.ckpt.tmp"
            tmp.write_text(json.dumps({"step": step}))
            os.replace(tmp, ckpt)
            if step == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    (stage_dir / "model.json").write_text(json.dumps({"step": step}))

_, ran = run_stage(Stage("train", {"steps": total}, train, ["model.json"]), study)
print("ran" if ran else "skipped")
"""


def test_killed_training_stage_resumes_from_last_ckpt_in_a_new_process(tmp_path: Path) -> None:
    script = tmp_path / "train_stage.py"
    script.write_text(textwrap.dedent(TRAINING_SCRIPT))
    study = tmp_path / "study"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(kill_after: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(script), str(study), "5", str(kill_after)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    killed = run(kill_after=3)
    assert killed.returncode == -signal.SIGKILL
    stage_dir = study / "train"
    assert json.loads((stage_dir / "last.ckpt").read_text()) == {"step": 3}
    assert not (stage_dir / MANIFEST).exists()

    resumed = run(kill_after=-1)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "ran"
    log = (stage_dir / "steps.log").read_text().split("\n")
    assert log[:-1] == ["start 0", "step 1", "step 2", "step 3", "start 3", "step 4", "step 5"]
    assert json.loads((stage_dir / "model.json").read_text()) == {"step": 5}
    assert read_manifest(stage_dir)["outputs"] == ["model.json"]
    assert not (study / ".stale").exists()

    done = run(kill_after=-1)
    assert done.stdout.strip() == "skipped"


def test_config_hash_is_sha256_of_compact_sorted_json_with_str_fallback() -> None:
    text = '{"a":1,"b":[1,2],"p":"runs/x"}'
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert config_hash({"p": Path("runs/x"), "b": [1, 2], "a": 1}) == expected


def test_stage_dirs_moved_aside_get_distinct_names(tmp_path: Path) -> None:
    def stage(value: int) -> Stage:
        return Stage("s", {"v": value}, lambda d: (d / "o").write_text(str(value)), ["o"])

    study = tmp_path / "nested" / "study"  # created on the way, parents included
    for value in (1, 2, 1, 2, 1, 2):  # the third copy of v=1 needs suffix 2
        assert run_stage(stage(value), study)[1]
    h1, h2 = config_hash({"v": 1})[:10], config_hash({"v": 2})[:10]
    names = sorted(p.name for p in (study / ".stale").iterdir())
    assert names == sorted([f"s-{h1}", f"s-{h2}", f"s-{h1}-1", f"s-{h2}-1", f"s-{h1}-2"])
    assert (study / ".stale" / f"s-{h1}-2" / "o").read_text() == "1"


def test_a_stage_dir_without_manifest_is_moved_aside_unless_empty(tmp_path: Path) -> None:
    stage = Stage("s", {"v": 1}, lambda d: (d / "o").write_text("new"), ["o"])
    (tmp_path / "s").mkdir()
    run_stage(stage, tmp_path)
    assert not (tmp_path / ".stale").exists()  # an empty folder is simply used
    other = tmp_path / "other"
    (other / "t").mkdir(parents=True)
    (other / "t" / "junk.txt").write_text("left by hand")
    run_stage(Stage("t", {"v": 1}, lambda d: (d / "o").write_text(""), ["o"]), other)
    assert (other / ".stale" / "t-None" / "junk.txt").read_text() == "left by hand"
    assert not (other / "t" / "junk.txt").exists()


def test_manifest_time_fields(tmp_path: Path) -> None:
    stage = Stage("s", {}, lambda d: (time.sleep(0.0123), (d / "o").write_text(""))[1], ["o"])
    start = time.perf_counter()
    stage_dir = run_stage(stage, tmp_path)[0]
    wall = time.perf_counter() - start
    manifest = read_manifest(stage_dir)
    assert 0.01 <= manifest["seconds"] <= round(wall, 2) + 0.01  # the stage's own time
    assert manifest["seconds"] == round(manifest["seconds"], 2)
    time.strptime(manifest["finished_at"], "%Y-%m-%dT%H:%M:%S%z")


def test_manifest_counts_the_cpu_time_of_the_stage_and_its_subprocesses(tmp_path: Path) -> None:
    """``cpu_seconds``: a stage that sleeps costs no CPU; one whose subprocess spins does."""
    import subprocess
    import sys

    idle = Stage("idle", {}, lambda d: (time.sleep(0.3), (d / "o").write_text(""))[1], ["o"])
    assert read_manifest(run_stage(idle, tmp_path)[0])["cpu_seconds"] < 0.2

    def spin(d: Path) -> None:
        code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
        subprocess.run([sys.executable, "-c", code], check=True)
        (d / "o").write_text("")

    busy = read_manifest(run_stage(Stage("busy", {}, spin, ["o"]), tmp_path)[0])
    assert 0.5 <= busy["cpu_seconds"] <= busy["seconds"] + 0.1
