"""Padding arithmetic, car-to-frame ratio and colour correction (thesis 3.2.1, 4.1.1.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from occaist.data.rgba import (
    Padding,
    car_to_frame_ratio,
    clear_background,
    color_correct,
    pad_to_ratio,
    pad_to_square,
    ratio_padding,
    resize_rgba,
    square_padding,
)


def _rgba(h: int, w: int, car: tuple[slice, slice] | None = None) -> np.ndarray:
    img = np.zeros((h, w, 4), np.uint8)
    img[..., :3] = 200
    if car is None:
        img[..., 3] = 255
    else:
        img[(*car, 3)] = 255
    return img


def test_car_to_frame_ratio_definition():
    alpha = np.zeros((4, 5), np.uint8)
    alpha[:2, :2] = 7  # partial alpha counts as car ("greater than 0")
    assert car_to_frame_ratio(alpha) == pytest.approx(4 / 16)
    assert car_to_frame_ratio(np.full((2, 2), 255, np.uint8)) == math.inf


@pytest.mark.parametrize(("h", "w"), [(10, 4), (4, 10), (10, 5), (5, 10), (7, 7)])
def test_pad_to_square_splits_difference(h: int, w: int):
    img = _rgba(h, w)
    sides = set()
    for seed in range(20):
        out, pad = pad_to_square(img, np.random.default_rng(seed))
        side = max(h, w)
        assert out.shape == (side, side, 4)
        # the original sits unchanged inside, the padding is transparent black
        np.testing.assert_array_equal(out[pad.top : pad.top + h, pad.left : pad.left + w], img)
        assert out[..., 3].sum() == img[..., 3].sum()
        if h < w:
            assert pad.left == pad.right == 0
            assert abs(pad.top - pad.bottom) == (w - h) % 2
            sides.add(pad.top > pad.bottom)
        elif w < h:
            assert pad.top == pad.bottom == 0
            assert abs(pad.left - pad.right) == (h - w) % 2
            sides.add(pad.left > pad.right)
        else:
            assert pad == Padding()
    if abs(h - w) % 2:
        assert sides == {True, False}  # the odd pixel goes to either side at random


def test_square_padding_is_seeded():
    a = [square_padding(3, 8, np.random.default_rng(s)) for s in range(10)]
    b = [square_padding(3, 8, np.random.default_rng(s)) for s in range(10)]
    assert a == b


def test_pad_to_ratio_within_one_pixel_worth():
    rng = np.random.default_rng(0)
    for _ in range(300):
        side = int(rng.integers(8, 300))
        car = int(rng.integers(1, side * side))
        ratio = float(rng.uniform(0.01, 0.6))
        n = ratio_padding(side, car, ratio)

        def r_of(k: int, side: int = side, car: int = car) -> float:
            total = (side + 2 * k) ** 2
            return car / (total - car) if total > car else math.inf

        if r_of(0) <= ratio:
            assert n == 0  # padding can only lower the ratio
            continue
        one_pixel = max(abs(r_of(n) - r_of(n + 1)), abs(r_of(max(n - 1, 0)) - r_of(n)))
        assert abs(r_of(n) - ratio) <= one_pixel
        # and n is the best integer: its neighbours are not closer
        assert abs(r_of(n) - ratio) <= abs(r_of(n + 1) - ratio)
        if n > 0:
            assert abs(r_of(n) - ratio) <= abs(r_of(n - 1) - ratio)


def test_pad_to_ratio_image():
    img = _rgba(40, 40, (slice(5, 35), slice(0, 40)))  # 1200 car px of 1600
    out, pad = pad_to_ratio(img, 0.25)
    n = pad.top
    assert pad == Padding(n, n, n, n)
    assert out.shape == (40 + 2 * n, 40 + 2 * n, 4)
    target_side = math.sqrt(1200 * 1.25 / 0.25)
    assert abs(out.shape[0] - target_side) <= 2
    assert car_to_frame_ratio(out[..., 3]) == pytest.approx(0.25, rel=0.05)
    np.testing.assert_array_equal(out[n : n + 40, n : n + 40], img)
    with pytest.raises(ValueError, match="square"):
        pad_to_ratio(_rgba(3, 4), 0.2)
    with pytest.raises(ValueError, match="positive"):
        pad_to_ratio(img, -0.1)


def test_color_correct_changes_exactly_the_black_car_pixels():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 3, size=(16, 16, 4), dtype=np.uint8)  # many zeros on purpose
    img[..., 3] *= 100
    before = img.copy()
    out = color_correct(img)
    np.testing.assert_array_equal(img, before)  # input untouched
    should = (img[..., 3] > 0) & (img[..., :3].sum(-1) == 0)
    assert should.any() and (~should).any()
    changed = (out != img).any(-1)
    np.testing.assert_array_equal(changed, should)
    assert (out[should, :3] == 1).all()
    np.testing.assert_array_equal(out[should, 3], img[should, 3])
    # invariant afterwards: black RGB only where transparent
    assert not ((out[..., 3] > 0) & (out[..., :3].sum(-1) == 0)).any()


def test_clear_background_and_resize():
    img = _rgba(30, 30, (slice(10, 20), slice(10, 20)))
    img = clear_background(img)
    assert (img[img[..., 3] == 0, :3] == 0).all()
    small = resize_rgba(img, 15)
    assert small.shape == (15, 15, 4) and small.dtype == np.uint8
    # premultiplied resampling: the car's colour does not darken at its edge
    assert (small[small[..., 3] == 255, :3] == 200).all()
    assert car_to_frame_ratio(small[..., 3]) == pytest.approx(car_to_frame_ratio(img[..., 3]))
    np.testing.assert_array_equal(resize_rgba(img, 30), img)
