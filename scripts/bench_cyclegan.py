"""Benchmark one AIST CycleGAN training step and stylize throughput, all settings in one run.

A training step = the generator step (G, F, six generator passes, every loss term including
the ResNet-18 feature distance) + the discriminator step (image pools), exactly as
``AISTCycleGAN.training_step``. Settings compared on identical weights and inputs:

* ``fp32``           eager float32 (baseline)
* ``channels_last``  networks and inputs in channels-last memory format
* ``bf16``           ``torch.autocast(bfloat16)`` for the forward passes (losses in float32)
* ``bf16_cl``        both
* ``compile``        ``torch.compile`` of the four networks (opt-in: ``--variants ...,compile``;
                     compilation takes minutes on a small CPU)

Timings are interleaved (one step of each setting per round) so load from other processes
hits all settings alike; medians over rounds and ratios to ``fp32`` come from the same run.
Loss agreement: the first step's loss terms of each setting vs ``fp32`` (max relative diff).

    python scripts/bench_cyclegan.py                      # quick preset, about a minute
    python scripts/bench_cyclegan.py --preset paper       # published widths (64/9), slow on CPU
    python scripts/bench_cyclegan.py --device cuda --preset paper --repeats 10
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from occaist.models.aist.module import AISTCycleGAN

log = logging.getLogger("bench_cyclegan")
GENERATOR = "occaist.models.aist.networks.ResnetGenerator"
DISCRIMINATOR = "occaist.models.aist.networks.PatchDiscriminator"

#: Network sizes, as the model's ``generator`` / ``discriminator`` config nodes.
PRESETS = {
    "quick": {
        "generator": {"_target_": GENERATOR, "base_channels": 16, "num_blocks": 3},
        "discriminator": {"_target_": DISCRIMINATOR, "base_channels": 16},
    },
    "paper": {
        "generator": {"_target_": GENERATOR, "base_channels": 64, "num_blocks": 9},
        "discriminator": {"_target_": DISCRIMINATOR, "base_channels": 64},
    },
}
VARIANTS = {
    "fp32": {"channels_last": False, "bf16": False, "compile": False},
    "channels_last": {"channels_last": True, "bf16": False, "compile": False},
    "bf16": {"channels_last": False, "bf16": True, "compile": False},
    "bf16_cl": {"channels_last": True, "bf16": True, "compile": False},
    "compile": {"channels_last": False, "bf16": False, "compile": True},
}


class Setting:
    """One model + optimisers in one setting, stepping like ``AISTCycleGAN.training_step``."""

    def __init__(self, name: str, arch: dict, device: torch.device, seed: int) -> None:
        opts = VARIANTS[name]
        self.name, self.bf16, self.device = name, opts["bf16"], device
        torch.manual_seed(seed)  # identical initial weights (and random Phi) in every setting
        self.model = AISTCycleGAN(**arch, res_weights=None, channels_last=opts["channels_last"])
        self.model.to(device)
        if opts["compile"]:
            for net in ("G", "F", "D_X", "D_Y"):
                setattr(self.model, net, torch.compile(getattr(self.model, net)))
        m = self.model
        self.opt_g = torch.optim.Adam([*m.G.parameters(), *m.F.parameters()], 2e-4, (0.5, 0.999))
        self.opt_d = torch.optim.Adam(
            [*m.D_X.parameters(), *m.D_Y.parameters()], 2e-4, (0.5, 0.999)
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        m = self.model
        x, y = m._format(x), m._format(y)
        for d in (m.D_X, m.D_Y):
            d.requires_grad_(False)
        with self._autocast():
            fake_y, fake_x = m.G(x), m.F(y)
            rec_x, rec_y = m.F(fake_y), m.G(fake_x)
            g_terms = m.generator_losses(x, y, fake_y, rec_x, fake_x, rec_y)
        loss_g = torch.stack(list(g_terms.values())).sum()
        self.opt_g.zero_grad()
        loss_g.backward()
        self.opt_g.step()
        for d in (m.D_X, m.D_Y):
            d.requires_grad_(True)
        with self._autocast():
            d_terms = m.discriminator_losses(x, y, fake_y, fake_x)
        self.opt_d.zero_grad()
        (d_terms["D_X"] + d_terms["D_Y"]).backward()
        self.opt_d.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return {k: float(v.detach()) for k, v in {**g_terms, **d_terms}.items()}

    @torch.no_grad()
    def stylize(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        with self._autocast():
            out = m.G(m._format(x))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return out


def _timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def bench_training(args: argparse.Namespace, device: torch.device) -> dict[str, Setting]:
    arch = PRESETS[args.preset]
    gen = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, 3, args.size, args.size)
    x = (torch.rand(shape, generator=gen) * 2 - 1).to(device)
    y = (torch.rand(shape, generator=gen) * 2 - 1).to(device)
    settings = {name: Setting(name, arch, device, args.seed) for name in args.variants}
    first: dict[str, dict[str, float]] = {}
    times: dict[str, list[float]] = {name: [] for name in settings}
    for name, setting in settings.items():  # warm-up; the first step's losses are compared
        seconds, first[name] = _timed(setting.step, x, y)
        log.info("warm-up %-14s %.2f s", name, seconds)
        for _ in range(args.warmup - 1):
            setting.step(x, y)
    for _ in range(args.repeats):
        for name, setting in settings.items():
            times[name].append(_timed(setting.step, x, y)[0])
    base = statistics.median(times["fp32"])
    print(
        f"\nAIST training step, {args.preset} preset {arch}, batch {args.batch}, "
        f"{args.size}x{args.size}, device {device}, threads {torch.get_num_threads()}, "
        f"median of {args.repeats} interleaved rounds"
    )
    print(f"{'setting':<15}{'median s':>10}{'min s':>9}{'speed-up':>10}{'max rel. loss diff':>20}")
    for name in settings:
        med = statistics.median(times[name])
        diff = max(abs(first[name][k] - v) / max(abs(v), 1e-8) for k, v in first["fp32"].items())
        print(f"{name:<15}{med:>10.3f}{min(times[name]):>9.3f}{base / med:>9.2f}x{diff:>20.2e}")
    return settings


def bench_stylize(
    args: argparse.Namespace, settings: dict[str, Setting], device: torch.device
) -> None:
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = (torch.rand(args.stylize_batch, 3, args.size, args.size, generator=gen) * 2 - 1).to(device)
    print(
        f"\nStylize: generator G alone, batch {args.stylize_batch} (images/s, median of "
        f"{args.repeats})"
    )
    for name, setting in settings.items():
        setting.model.eval()
        setting.stylize(x)  # warm-up
        rates = [args.stylize_batch / _timed(setting.stylize, x)[0] for _ in range(args.repeats)]
        print(f"{name:<15}{statistics.median(rates):>10.2f} img/s")
    from occaist.stylize import stylize_dataset

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        rng = np.random.default_rng(0)
        for i in range(args.stylize_images):
            folder = src / "renders" / "02958343" / f"m{i // 5:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            rgba = rng.integers(0, 256, (args.size, args.size, 4), dtype=np.uint8)
            Image.fromarray(rgba, "RGBA").save(folder / f"render_{i % 5}.png")
        model = settings["fp32"].model
        seconds, _ = _timed(
            stylize_dataset,
            model.G,
            src,
            Path(tmp) / "dst",
            args.size,
            args.stylize_batch,
            str(device),
            True,
            False,
        )
    print(
        f"stylize_dataset end to end (fp32, PNG read/write included): "
        f"{args.stylize_images / seconds:.2f} img/s over {args.stylize_images} renders"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--variants",
        default="fp32,channels_last,bf16,bf16_cl",
        help=f"comma-separated, from {sorted(VARIANTS)}; fp32 is always run",
    )
    parser.add_argument("--stylize-batch", type=int, default=16)
    parser.add_argument("--stylize-images", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("occaist.utils.weights").setLevel(logging.ERROR)  # random Phi is intended
    torch.set_num_threads(args.threads)
    args.variants = ["fp32", *[v for v in args.variants.split(",") if v and v != "fp32"]]
    device = torch.device(args.device)
    settings = bench_training(args, device)
    bench_stylize(args, settings, device)


if __name__ == "__main__":
    main()
