"""DiffAugment (pipeline.gan.diffaugment): what each transform does to a batch, and that gradients flow through it."""

from __future__ import annotations

import pytest
import torch

from pipeline.gan.diffaugment import cutout, diff_augment, translate


def _batch(n=6, h=16, w=12) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, 2, h, w)  # values in [0, 1): never the background value -1


def test_translation_is_a_whole_pixel_shift_filled_with_background():
    x = _batch()
    y = translate(x, ratio=0.25)
    n, _, h, w = x.shape
    sy, sx = 2, 2  # ratio 0.25 of 16 / 2 and of 12 / 2, rounded
    shifts = []
    for i in range(n):
        found = [(dy, dx) for dy in range(-sy, sy + 1) for dx in range(-sx, sx + 1)
                 if torch.equal(y[i], _shifted(x[i], dy, dx))]
        assert len(found) == 1, f"image {i} is not one shift of its input"
        shifts.append(found[0])
    assert len(set(shifts)) > 1  # each image draws its own shift


def _shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.full_like(img, -1.0)
    h, w = img.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_cutout_sets_one_square_to_background_and_leaves_the_rest():
    x = _batch(n=32)
    y = cutout(x, ratio=0.5)
    changed = (y != x)
    assert torch.equal(changed[:, 0], changed[:, 1])  # the same square in every channel
    assert torch.all(y[changed] == -1.0)
    for i in range(x.shape[0]):
        rows = changed[i, 0].any(1).nonzero().flatten()
        cols = changed[i, 0].any(0).nonzero().flatten()
        assert rows.numel() and cols.numel()  # a square centred inside the image always covers part of it
        assert int(changed[i, 0].sum()) == rows.numel() * cols.numel()  # a rectangle ...
        assert rows.numel() <= 8 and cols.numel() <= 6  # ... at most half the image's side
    full = [i for i in range(x.shape[0]) if int(changed[i, 0].sum()) == 8 * 6]
    assert full, "no cut-out lay wholly inside the image in 32 draws"


def test_policy_order_gradients_and_errors():
    x = _batch().requires_grad_(True)
    assert diff_augment(x, []) is x
    y = diff_augment(x, ["translation", "cutout"])
    assert y.shape == x.shape
    y.sum().backward()
    # every kept pixel passes its gradient (1 per use); cut and shifted-out pixels get 0
    assert set(torch.unique(x.grad).tolist()) <= {0.0, 1.0} and x.grad.sum() > 0
    with pytest.raises(ValueError, match="colour"):
        diff_augment(x, ["colour"])


def test_transforms_follow_the_global_rng_for_exact_resume():
    x = _batch()
    torch.manual_seed(5)
    a = diff_augment(x, ["translation", "cutout"])
    torch.manual_seed(5)
    b = diff_augment(x, ["translation", "cutout"])
    assert torch.equal(a, b)
