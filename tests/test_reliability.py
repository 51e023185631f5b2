"""What users meet first when something is off: file permissions, progress bars, unwritable run
folders, and errors about their data that read as one message instead of a traceback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from occaist.utils.io import write_json_atomic, write_text_atomic


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(umask, tmp_path: Path, mask: int, mode: int) -> None:
    umask(mask)
    write_text_atomic(tmp_path / "a.txt", "x")
    write_json_atomic(tmp_path / "sub" / "b.json", {"a": 1})
    for path in (tmp_path / "a.txt", tmp_path / "sub" / "b.json"):
        assert stat.S_IMODE(path.stat().st_mode) == mode


def test_the_world_is_readable_by_others(umask, tmp_path: Path) -> None:
    """Every file of a generated world is group/other readable under umask 022."""
    from occaist.synth import generate_world

    umask(0o022)
    generate_world(tmp_path / "w", preset="tiny", seed=0)
    files = [p for p in (tmp_path / "w").rglob("*") if p.is_file()]
    assert files
    private = [p for p in files if stat.S_IMODE(p.stat().st_mode) & 0o044 != 0o044]
    assert not private, private[:5]


def _train(cwd: Path, *overrides: str, env_extra: dict | None = None):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)  # as users run it
    env.update(env_extra or {})
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(repo / "train.py"), "logger=csv", "extras.num_threads=1"]
    cmd += overrides
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_missing_data_is_one_clear_message(tmp_path: Path) -> None:
    result = _train(tmp_path, "experiment=dpc_demo_cpu", f"data.root={tmp_path / 'nowhere'}")
    assert result.returncode == 1
    assert "error: ShapeNet renders not found" in result.stderr
    assert str(tmp_path / "nowhere") in result.stderr
    assert "Traceback" not in result.stderr
    shown = _train(
        tmp_path,
        "experiment=dpc_demo_cpu",
        f"data.root={tmp_path / 'nowhere'}",
        env_extra={"HYDRA_FULL_ERROR": "1"},
    )
    assert shown.returncode == 1 and "Traceback" in shown.stderr


@pytest.mark.slow
def test_missing_weights_inside_instantiate_is_one_clear_message(tmp_path: Path) -> None:
    """Hydra wraps a constructor's error in InstantiationException; the cause is what we print."""
    result = _train(
        tmp_path,
        "experiment=aist_constrained",
        f"model.res_weights={tmp_path / 'resnet18.pth'}",
        f"data.renders_root={tmp_path}",
    )
    assert result.returncode == 1
    assert f"not found at {tmp_path / 'resnet18.pth'}" in result.stderr
    assert "Traceback" not in result.stderr and "InstantiationException" not in result.stderr


def _composed_train(tiny_world: Path, out: Path, *overrides: str):
    from occaist.tasks import train
    from occaist.utils.compose import composed

    args = [
        "experiment=dpc_demo_cpu",
        f"data.root={tiny_world / 'shapenet_renders'}",
        "logger=csv",
        "trainer.max_steps=1",
        "trainer.max_time=null",
        "test=false",
        *overrides,
    ]
    with composed(args, output_dir=out) as cfg:
        return train(cfg)


@pytest.mark.slow
def test_progress_bar_can_be_switched_off(tiny_world: Path, tmp_path: Path) -> None:
    """The default callbacks hold a rich progress bar; Lightning refuses it with the bar off."""
    _, objects = _composed_train(tiny_world, tmp_path, "trainer.enable_progress_bar=false")
    assert objects["trainer"].global_step == 1
    assert objects["trainer"].progress_bar_callback is None


def test_unwritable_checkpoint_folder_stops_before_training(
    tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning swallows the PermissionError of its checkpoint folder; we refuse up front.

    (The tests run as root, which may write anywhere, so the folder's answer is simulated.)
    """
    ckpt_dir = tmp_path / "checkpoints"
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, m: False if Path(p) == ckpt_dir else real_access(p, m)
    )
    with pytest.raises(PermissionError, match=r"checkpoint folder .* is not writable"):
        _composed_train(tiny_world, tmp_path)
    assert not list(tmp_path.rglob("*.ckpt"))
