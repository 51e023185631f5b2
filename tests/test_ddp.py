"""Distributed data parallel on CPU processes (gloo): metrics equal their single-process values."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from occaist.cli import train
from occaist.metrics import PCK, ChamferDistance, MaskXOR, PoseAccuracy
from occaist.utils.compose import composed
from tests.helpers import TINY_AIST, write_segments

WORLD = 2


def _data(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = 6  # instances / models / masks: 3 per rank
    gt_kp = torch.rand(n, 14, 2, generator=g) * 100
    return {
        "pred_kp": gt_kp + torch.randn(n, 14, 2, generator=g) * 8,
        "gt_kp": gt_kp,
        "vis": torch.randint(0, 3, (n, 14), generator=g),
        "bbox": torch.tensor([[0.0, 0.0, 100.0, 80.0]]).repeat(n, 1),
        "pred_pc": torch.rand(n, 50, 3, generator=g) - 0.5,
        "gt_pc": torch.rand(n, 70, 3, generator=g) - 0.5,
        "q_pred": torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        "q_gt": torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        "mask_pred": torch.rand(n, 16, 16, generator=g),
        "mask_ref": (torch.rand(n, 16, 16, generator=g) > 0.5).float(),
    }


def _compute_all(rows: slice) -> dict[str, torch.Tensor]:
    d = _data()
    pck, chamfer, pose, xor = PCK(), ChamferDistance(), PoseAccuracy(), MaskXOR()
    pck.update(d["pred_kp"][rows], d["gt_kp"][rows], d["vis"][rows], d["bbox"][rows])
    for i in range(*rows.indices(6)):
        chamfer.update(d["pred_pc"][i], d["gt_pc"][i])
    pose.update(d["q_pred"][rows], d["q_gt"][rows])
    xor.update(d["mask_pred"][rows], d["mask_ref"][rows])
    out = {f"pck/{k}": v for k, v in pck.compute().items()}
    out |= {f"chamfer/{k}": v for k, v in chamfer.compute().items()}
    out |= {f"pose/{k}": v for k, v in pose.compute().items()}
    out["xor"] = xor.compute()
    return out


def _worker(rank: int, init_file: str, result_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        out = _compute_all(slice(3 * rank, 3 * rank + 3))
        if rank == 0:
            torch.save(out, result_file)
    finally:
        dist.destroy_process_group()


def _spawn(fn: Callable, *args: str) -> None:
    mp.start_processes(fn, args=args, nprocs=WORLD, start_method="spawn", join=True)


@pytest.mark.slow
def test_metrics_under_ddp_equal_single_process() -> None:
    single = _compute_all(slice(0, 6))
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.pt")
        _spawn(_worker, os.path.join(tmp, "init"), result)
        distributed = torch.load(result)
    assert set(distributed) == set(single)
    for key, value in single.items():
        torch.testing.assert_close(distributed[key], value, equal_nan=True, msg=key)


DDP_COMMON = ["trainer=ddp_cpu", "trainer.devices=2", "trainer.fast_dev_run=true",
              "data.num_workers=0", "~logger", "callbacks=none"]  # fmt: skip


def _ddp_overrides(name: str, world: Path, tmp: Path) -> list[str]:
    if name == "dpc_baseline":
        return [f"data.root={world / 'shapenet_renders'}", "data.image_size=32",
                "data.batch_size=2", "data.views_per_model=2", "data.eval_batch_size=2",
                "model.net.num_points=200", "model.vox_size=16", "model.gauss_kernel_size=5",
                "model.icp_iterations=2"]  # fmt: skip
    if name == "aist_constrained":
        return [f"data.renders_root={world / 'shapenet_renders'}",
                f"data.prepared_root={write_segments(tmp / 'prepared')}",
                *TINY_AIST, "data.batch_size=2"]  # fmt: skip
    if name == "occnet_synthetic":
        return [f"data.root={world / 'carfusion'}", "model.net.min_size=96",
                "model.net.max_size=128", "model.net.box_batch_size_per_image=16",
                "data.batch_size=1"]  # fmt: skip
    raise KeyError(name)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["dpc_baseline", "aist_constrained", "occnet_synthetic"])
def test_every_module_trains_under_ddp_on_two_processes(
    experiment: str, tiny_world: Path, tmp_path: Path
) -> None:
    overrides = [f"experiment={experiment}", *DDP_COMMON,
                 *_ddp_overrides(experiment, tiny_world, tmp_path)]  # fmt: skip
    with composed(overrides, output_dir=tmp_path / "run") as cfg:
        _, objects = train(cfg)
    trainer = objects["trainer"]
    assert trainer.world_size == 2
    assert trainer.strategy.__class__.__name__ == "DDPStrategy"
    assert trainer.state.finished
