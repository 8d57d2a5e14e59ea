"""Test-time augmentation views, shared by SR and translation inference."""

from __future__ import annotations

import pytest
import torch

from pipeline.nets.tta import average, views


def test_views_are_the_symmetries_identity_first():
    square = views(2, transpose=True)
    assert square[0] == ((), False) and len(square) == 8 and len(set(square)) == 8
    assert views(2, transpose=False) == [((), False), ((2, 3), False), ((2,), False), ((3,), False)]
    cube = views(3, transpose=False)
    assert len(cube) == 8 and {f for f, _ in cube} == {(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)}


def test_average_maps_every_output_back():
    x = torch.rand(2, 1, 6, 6)
    assert torch.allclose(average(lambda v: 3 * v, x, views(2, True)), 3 * x)  # equivariant: unchanged
    ramp = torch.arange(6.0).view(1, 1, 6, 1)  # a network that adds a ramp along the rows it sees

    # mapped back, the 8 views add the ramp along rows and columns, forwards and reversed: (n - 1) / 2 on average
    out = average(lambda v: v + ramp, x, views(2, True))
    assert torch.allclose(out, x + 2.5)
    # without transposes the ramp stays along the rows, symmetrised by the flips
    assert torch.allclose(average(lambda v: v + ramp, x, views(2, False)), x + 2.5)
    assert torch.allclose(average(lambda v: v + ramp, x, [((), False)]), x + ramp)


def _inputs(x: torch.Tensor, view_list) -> list[torch.Tensor]:
    """The views of `x` as `average` hands them to the network."""
    seen: list[torch.Tensor] = []
    average(lambda v: seen.append(v) or v, x, view_list)
    return seen


def test_view_counts_take_the_rotations_first():
    x = torch.arange(12.0).view(1, 1, 3, 4)  # no symmetry: every view differs
    assert views(2, True, 2) == [((), False), ((2, 3), False)]
    assert torch.equal(_inputs(x, views(2, True, 2))[1], torch.rot90(x, 2, (2, 3)))
    rotations = {tuple(v.flatten().tolist()) for v in _inputs(x, views(2, True, 4))}
    assert rotations == {tuple(torch.rot90(x, k, (2, 3)).flatten().tolist()) for k in range(4)}
    assert set(views(2, True, 8)) == set(views(2, True)) and views(2, True, 1) == [((), False)]
    cube = views(3, False, 4)  # the 180-degree rotations about each axis: an even number of flips
    assert cube[0] == ((), False) and all(len(f) == 2 for f, _ in cube[1:])
    with pytest.raises(ValueError, match="must be >= 1"):
        views(2, True, 0)
