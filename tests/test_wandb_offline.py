"""A training run with the default logger (W&B, offline) writes a run that holds what it logged.

The rest of the suite disables W&B (``WANDB_MODE=disabled`` in conftest); this test runs the
default ``logger=wandb`` with ``WANDB_MODE=offline``, as on a laptop or a cluster node without
network, and reads the offline run back from its ``run-<id>.wandb`` file: a LevelDB-style log
of ``wandb_internal_pb2.Record`` protobufs (the format ``wandb sync`` uploads), parsed here with
the framing written out, so no private W&B reader is needed.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

#: LevelDB log framing used by W&B: 7-byte file header, 32 KiB blocks, 7-byte record headers.
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list:
    """Every ``Record`` of an offline run file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    payloads, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # the tail of a block too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero padding up to the next block
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            payloads.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            payloads.append(pending + chunk)
            pending = b""
        else:
            raise ValueError(f"{path}: unknown record type {kind} at byte {pos}")
    return [wandb_internal_pb2.Record.FromString(p) for p in payloads]


@pytest.mark.slow
def test_default_wandb_logger_offline_run_holds_config_and_losses(
    tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path
) -> None:
    import os
    import subprocess
    import sys

    from occaist.utils.compose import composed

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "run"
    overrides = [
        "experiment=dpc_baseline",
        f"data.root={tiny_world / 'shapenet_renders'}",
        "data.image_size=32",
        "data.batch_size=2",
        "data.views_per_model=2",
        "data.eval_batch_size=2",
        "data.num_workers=0",
        "model.net.num_points=300",
        "model.vox_size=16",
        "model.gauss_kernel_size=5",
        "trainer.max_steps=3",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        "test=false",
        "~callbacks.rich_progress_bar",
    ]
    with composed(overrides, output_dir=out) as cfg:
        assert cfg.logger.wandb.mode == "offline"  # the default logger, as configured
    # in a fresh interpreter, as a user runs it: wandb keeps process-wide state (its setup and
    # service) from its first use, which other tests of the same pytest worker may have made
    cmd = [sys.executable, "train.py", *overrides, f"hydra.run.dir={out}"]
    subprocess.run(cmd, check=True, cwd=repo_root, env=dict(os.environ), timeout=600)

    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    records = read_wandb_records(run_file)
    by_type: dict[str, list] = {}
    for record in records:
        by_type.setdefault(record.WhichOneof("record_type"), []).append(record)

    assert "run" in by_type, f"no run record in {run_file}: {sorted(by_type)}"
    (run,) = by_type["run"][:1]
    assert run.run.project == "occaist"
    assert run.run.job_type == "train"

    config = {}
    for record in by_type.get("config", []):
        for item in record.config.update:
            config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    assert config, "no hyperparameters were logged"
    assert any("vox_size" in json.dumps({k: v}) for k, v in config.items())

    rows = []
    for record in by_type.get("history", []):
        rows.append({item.key or "/".join(item.nested_key): item.value_json for item in
                     record.history.item})  # fmt: skip
    losses = [float(r[k]) for r in rows for k in r if k.startswith("train/") and "loss" in k]
    assert losses and all(math.isfinite(v) for v in losses)
    steps = {json.loads(r["trainer/global_step"]) for r in rows if "trainer/global_step" in r}
    assert len(steps) >= 2, f"losses logged at steps {steps}"
    # image panels: the history names files that the run folder holds
    images = [json.loads(v) for r in rows for k, v in r.items() if k.endswith("/filenames")]
    for name in (n for names in images for n in names):
        assert (run_file.parent / "files" / name).is_file(), name
    assert by_type.get("exit") and by_type["exit"][-1].exit.exit_code == 0
