"""Stylize: a complete copy with renders replaced by G(x), alpha and annotations unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import scipy.io
import torch
from PIL import Image

from occaist.models.aist.module import AISTCycleGAN
from occaist.stylize import RENDER_PATTERN, load_generator, stylize_dataset
from tests.test_aist_module import TINY, _datamodule
from tests.test_unpaired import SYNSET, write_unpaired_tree


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _add_annotations(renders: Path) -> None:
    """Depth, cameras and ground-truth clouds beside the renders, as in the DPC layout."""
    rng = np.random.default_rng(1)
    for model_dir in sorted((renders / "renders" / SYNSET).iterdir()):
        for view in range(2):
            depth = rng.integers(0, 65536, (32, 32)).astype(np.uint16)
            Image.fromarray(depth).save(model_dir / f"depth_{view}.png")
            scipy.io.savemat(
                model_dir / f"camera_{view}.mat",
                {"extrinsic": rng.normal(size=(4, 4)), "pos": rng.normal(size=3)},
            )
        gt = renders / "gt" / "downsampled" / SYNSET / f"{model_dir.name}.mat"
        gt.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(gt, {"points": rng.normal(size=(50, 3))})
    (renders.parent / "SYNTHETIC").write_text("synthetic\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(renders root, prepared root, checkpoint of a one-step AIST model)."""
    root = tmp_path_factory.mktemp("stylize")
    tree = write_unpaired_tree(root)
    _add_annotations(tree[0])
    pl.seed_everything(0)
    model = AISTCycleGAN(**TINY)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, _datamodule(tree))
    ckpt = root / "aist.ckpt"
    trainer.save_checkpoint(ckpt)
    return tree[0], tree[1], ckpt


def test_load_generator_matches_the_module(world):
    _, _, ckpt = world
    generator, settings = load_generator(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[f"G.{k}"]) for k, v in generator.state_dict().items())
    assert settings["data"]["image_size"] == 32 and not generator.training


def test_copy_is_complete_alpha_and_annotations_identical(world, tmp_path):
    src, _, ckpt = world
    dst = tmp_path / "styled" / "shapenet_renders"
    manifest = stylize_dataset(ckpt, src, dst, batch_size=3, device="cpu", progress=False)
    src_files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    dst_files = sorted(p.relative_to(dst) for p in dst.rglob("*") if p.is_file())
    # plus the manifest, and the world's SYNTHETIC marker (it sat above src) so readers still warn
    assert dst_files == sorted([*src_files, Path("manifest.json"), Path("SYNTHETIC")])
    renders = [rel for rel in src_files if RENDER_PATTERN.fullmatch(rel.name)]
    assert manifest["counts"]["stylized"] == len(renders) == 10
    changed = 0
    for rel in src_files:
        if rel in renders:
            a, b = np.asarray(Image.open(src / rel)), np.asarray(Image.open(dst / rel))
            assert b.shape == a.shape and b.dtype == np.uint8
            assert np.array_equal(a[..., 3], b[..., 3])  # every alpha byte
            changed += not np.array_equal(a[..., :3], b[..., :3])
        else:
            assert _digest(src / rel) == _digest(dst / rel), rel
    assert changed == len(renders)
    on_disk = json.loads((dst / "manifest.json").read_text())
    assert on_disk["counts"] == manifest["counts"] and on_disk["checkpoint"] == str(ckpt)


def test_rgb_is_the_generator_output(world, tmp_path):
    src, _, ckpt = world
    generator, _ = load_generator(ckpt)
    dst = tmp_path / "out"
    stylize_dataset(generator, src, dst, image_size=32, device="cpu", progress=False)
    rel = Path("renders") / SYNSET / "model000" / "render_1.png"
    from occaist.data.unpaired import load_rgba, to_tensor

    x = to_tensor(load_rgba(src / rel, 32), 3)[None]
    with torch.no_grad():
        expected = ((generator(x)[0] + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0)
    assert np.array_equal(np.asarray(Image.open(dst / rel))[..., :3], expected.numpy())


def test_resume_skips_finished_files(world, tmp_path):
    src, _, ckpt = world
    dst = tmp_path / "out"
    first = stylize_dataset(ckpt, src, dst, device="cpu", progress=False)
    victim = dst / "renders" / SYNSET / "model001" / "render_0.png"
    kept = dst / "renders" / SYNSET / "model002" / "render_1.png"
    before = kept.stat().st_mtime_ns
    victim.unlink()  # as if the first run was killed before writing it
    second = stylize_dataset(ckpt, src, dst, device="cpu", progress=False)
    assert second["counts"]["stylized"] == 1
    assert second["counts"]["existing"] == sum(first["counts"].values()) - 1
    assert kept.stat().st_mtime_ns == before and victim.exists()


def test_cli_entry_point(world, tmp_path, monkeypatch):
    import sys

    from occaist import stylize

    src, _, ckpt = world
    dst = tmp_path / "cli"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "stylize",
            f"ckpt={ckpt}",
            f"src={src}",
            f"dst={dst}",
            "device=cpu",
            "progress=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    )
    stylize.main()
    assert json.loads((dst / "manifest.json").read_text())["counts"]["stylized"] == 10


def test_tiny_world_stylized_copy_reads_like_the_original(tiny_world, world, tmp_path):
    """On the synthetic world: alpha bytes and every annotation file identical, and the DPC
    data module reads the stylized copy exactly as the original (same masks, cameras, GT)."""
    from occaist.data.shapenet_renders import ShapeNetRendersDataModule

    _, _, ckpt = world
    src = tiny_world / "shapenet_renders"
    dst = tmp_path / "world_stylized" / "shapenet_renders"
    manifest = stylize_dataset(ckpt, src, dst, batch_size=8, device="cpu", progress=False)
    assert manifest["counts"]["stylized"] > 0
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        if RENDER_PATTERN.fullmatch(rel.name):
            a, b = np.asarray(Image.open(path)), np.asarray(Image.open(dst / rel))
            assert a.shape == b.shape and np.array_equal(a[..., 3], b[..., 3]), rel
        else:
            assert _digest(path) == _digest(dst / rel), rel

    def first_test_batch(root: Path) -> dict:
        dm = ShapeNetRendersDataModule(str(root), num_workers=0, eval_batch_size=2)
        dm.setup("test")
        return next(iter(dm.test_dataloader()))

    original, styled = first_test_batch(src), first_test_batch(dst)
    assert set(original) == set(styled)
    for key, value in original.items():
        if key != "image" and isinstance(value, torch.Tensor):
            assert torch.equal(value, styled[key]), key


def test_bf16_keeps_alpha_and_stays_close(world, tmp_path):
    src, _, ckpt = world
    full = stylize_dataset(ckpt, src, tmp_path / "fp32", device="cpu", progress=False)
    half = stylize_dataset(ckpt, src, tmp_path / "bf16", device="cpu", progress=False, bf16=True)
    assert half["bf16"] and not full["bf16"]
    for path in sorted((tmp_path / "fp32").rglob("render_*.png")):
        rel = path.relative_to(tmp_path / "fp32")
        a = np.asarray(Image.open(path)).astype(int)
        b = np.asarray(Image.open(tmp_path / "bf16" / rel)).astype(int)
        assert np.array_equal(a[..., 3], b[..., 3])
        assert np.abs(a[..., :3] - b[..., :3]).mean() < 2.0
