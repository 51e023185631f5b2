"""Each thesis filter on hand-made masks, at and around its threshold."""

from __future__ import annotations

import numpy as np
import pytest

from occaist.prep.filters import (
    CandidateView,
    FilterConfig,
    border_coverage,
    border_width,
    check_candidate,
    check_grayscale,
    count_components,
    mean_chroma,
    rule_names,
)

H, W = 300, 400


def _mask(box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[box[1] : box[3], box[0] : box[2]] = True
    return m


def _view(label="car", score=0.9, box=(100, 50, 300, 250), mask=None) -> CandidateView:
    mask = _mask(box) if mask is None else mask
    return CandidateView(label, score, tuple(float(v) for v in box), mask)


def _failed(view: CandidateView, cfg: FilterConfig | None = None) -> str | None:
    failed, _ = check_candidate(view, cfg or FilterConfig())
    return None if failed is None else failed.rule


def test_a_good_candidate_passes_every_rule():
    failed, verdicts = check_candidate(_view(), FilterConfig())
    assert failed is None
    assert [v.rule for v in verdicts] == [
        "zero_size_box", "label", "score", "box_size", "mask_fill", "occlusion", "cropping",
    ]  # fmt: skip


def test_label_rule():
    assert _failed(_view(label="truck")) is None
    assert _failed(_view(label="bus")) == "label"
    cfg = FilterConfig()
    cfg.label.allowed = ["bus"]
    assert _failed(_view(label="bus"), cfg) is None


@pytest.mark.parametrize(("score", "rejected"), [(0.7, False), (0.7001, False), (0.6999, True)])
def test_score_rule_at_threshold(score: float, rejected: bool):
    assert (_failed(_view(score=score)) == "score") is rejected


@pytest.mark.parametrize(("side", "rejected"), [(128, False), (129, False), (127, True)])
def test_box_size_rule_at_threshold(side: int, rejected: bool):
    box = (10, 10, 10 + side, 10 + side)  # sqrt(area) == side
    assert (_failed(_view(box=box)) == "box_size") is rejected
    # a non-square box: sqrt(64 * 256) = 128 passes, sqrt(64 * 255) does not
    assert _failed(_view(box=(10, 10, 266, 74))) is None
    assert _failed(_view(box=(10, 10, 265, 74))) == "box_size"


@pytest.mark.parametrize(("rows", "rejected"), [(100, False), (101, False), (99, True)])
def test_mask_fill_rule_at_threshold(rows: int, rejected: bool):
    box = (100, 50, 300, 250)  # 200 x 200 box
    mask = _mask((100, 50, 300, 50 + rows))  # fill = rows / 200
    assert (_failed(_view(box=box, mask=mask)) == "mask_fill") is rejected


def test_zero_size_box_comes_first():
    assert _failed(_view(box=(100, 50, 100, 250))) == "zero_size_box"
    assert _failed(_view(box=(100, 50, 300, 50), label="bus")) == "zero_size_box"


def test_occlusion_rule_connectivity():
    mask = _mask((100, 50, 200, 250)) | _mask((202, 50, 300, 250))  # a one-pixel gap
    assert count_components(mask) == 2
    assert _failed(_view(mask=mask)) == "occlusion"
    diagonal = _mask((100, 50, 200, 150)) | _mask((200, 150, 300, 250))  # touching at a corner
    assert count_components(diagonal, 8) == 1 and count_components(diagonal, 4) == 2
    cfg = FilterConfig()
    cfg.mask_fill.enabled = False
    assert _failed(_view(mask=diagonal), cfg) is None
    cfg.occlusion.connectivity = 4
    assert _failed(_view(mask=diagonal), cfg) == "occlusion"
    cfg.occlusion.max_components = 2
    assert _failed(_view(mask=diagonal), cfg) is None
    with pytest.raises(ValueError, match="connectivity"):
        count_components(mask, 6)


def test_border_strip_width():
    assert border_width(400, 0.02) == 8 and border_width(300, 0.02) == 6
    assert border_width(10, 0.02) == 1


@pytest.mark.parametrize(("rows", "rejected"), [(100, False), (101, True), (99, False)])
def test_cropping_rule_at_threshold(rows: int, rejected: bool):
    """Left strip is 8 px wide and 300 high: covering exactly 100 of its rows is a third."""
    mask = _mask((0, 100, 150, 100 + rows))
    assert border_coverage(mask, 0.02) == pytest.approx(rows / 300)
    cfg = FilterConfig()
    for rule in ("mask_fill", "box_size"):
        getattr(cfg, rule).enabled = False
    box = (0, 100, 150, 100 + rows)
    assert (_failed(_view(box=box, mask=mask), cfg) == "cropping") is rejected


def test_cropping_every_border():
    cfg = FilterConfig()
    for rule in ("mask_fill", "box_size", "occlusion"):
        getattr(cfg, rule).enabled = False
    cases = {
        (100, 0, 300, 10): "cropping",  # top strip (6 rows x 400) half covered
        (100, 290, 300, 300): "cropping",  # bottom
        (390, 50, 400, 250): "cropping",  # right strip (8 cols x 300) two thirds covered
        (0, 50, 10, 250): "cropping",  # left
        (150, 0, 250, 10): None,  # a quarter of the top strip: kept
        (100, 6, 300, 294): None,  # stops just inside the top and bottom strips
    }
    for box, expect in cases.items():
        assert _failed(_view(box=box), cfg) == expect, box


def test_grayscale_rule():
    rng = np.random.default_rng(0)
    gray = np.repeat(rng.integers(0, 255, (20, 30, 1), dtype=np.uint8), 3, axis=-1)
    assert mean_chroma(gray) == 0.0
    assert check_grayscale(gray, FilterConfig()).rule == "grayscale"
    tinted = gray.copy()
    tinted[..., 0] = np.clip(tinted[..., 0].astype(int) + 2, 0, 255)  # chroma 2 except clipped
    tinted[..., 0][gray[..., 0] > 252] = gray[..., 0][gray[..., 0] > 252]
    exact = mean_chroma(tinted)
    assert exact <= 2.0
    assert check_grayscale(tinted, FilterConfig()) is not None  # at the threshold: grayscale
    colour = gray.copy()
    colour[..., 2] = np.clip(colour[..., 2].astype(int) + 3, 0, 255).astype(np.uint8)
    colour[..., 2][gray[..., 2] > 250] = 0
    assert mean_chroma(colour) > 2.0 and check_grayscale(colour, FilterConfig()) is None
    cfg = FilterConfig()
    cfg.grayscale.enabled = False
    assert check_grayscale(gray, cfg) is None


def test_rule_names_for_the_report():
    names = rule_names()
    assert names.index("grayscale") < names.index("occlusion") < names.index("cropping")
    assert set(names) >= {"label", "score", "box_size", "mask_fill", "zero_size_box"}
