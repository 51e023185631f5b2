"""Distributed data parallel on CPU processes (gloo): metrics equal their single-process values."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from occaist.metrics import PCK, ChamferDistance, MaskXOR, PoseAccuracy

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
