"""Whole-volume inference windows, the same for every family: a volume as a batch of 2D slices or as one 3D
image, MONAI's `SlidingWindowInferer` over it (Gaussian-blended windows), and inside each window autocast and
test-time augmentation (`pipeline.nets.tta`). Memory is bounded by the window size and the window batch (plus
the input and output volumes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from pipeline.gan.base import Precision
from pipeline.nets.tta import average, views


def round_up(n: int, m: int) -> int:
    """`n` rounded up to a multiple of `m`."""
    return -(-int(n) // m) * m


def as_batch(volume: np.ndarray, spatial_dims: int, slice_axis: int | None) -> torch.Tensor:
    """A 3-D (x, y, z) volume as (N, 1, *spatial): its slices across `slice_axis` (2D) or one image (3D)."""
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    return torch.movedim(x, slice_axis, 0)[:, None] if spatial_dims == 2 else x[None, None]


def with_context(slices: torch.Tensor, context: int) -> torch.Tensor:
    """(N, 1, *spatial) consecutive slices as (N, 1 + 2 context, *spatial): slice n with its neighbours
    n - context .. n + context as channels (2.5D; the edge slices repeated beyond the volume)."""
    if not context:
        return slices
    n = slices.shape[0]
    return slices[(torch.arange(n)[:, None] + torch.arange(-context, context + 1)).clamp(0, n - 1), 0]


def from_batch(out: torch.Tensor, spatial_dims: int, slice_axis: int | None) -> torch.Tensor:
    """The inverse of `as_batch` for a one-channel output."""
    return torch.movedim(out[:, 0], 0, slice_axis) if spatial_dims == 2 else out[0, 0]


def sliding_window(
    x: torch.Tensor,
    net: Callable[[torch.Tensor], torch.Tensor],
    roi_size: Sequence[int],
    sw_batch_size: int,
    overlap: float,
    device: torch.device,
    precision: str = "auto",
    tta: bool = False,
    transpose: bool = False,
    tta_views: int | None = None,
    multiple: int = 1,
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``net`` applied to (N, C, *spatial) `x` window by window; the blended output, on the CPU.

    Windows are `roi_size` voxels per side, no larger than the image rounded up to `multiple` (the network's
    size factor; the image is zero-padded to it). `net` runs on `device` under the autocast of `precision`;
    with `tta` each window is also run on its flips (and, with `transpose`, transposes: 2D windows whose two
    axes are alike), or on the first `tta_views` of them (`pipeline.nets.tta.views`; None: all), and the
    outputs, mapped back, averaged; `finish` is applied to that average.
    """
    from monai.inferers import SlidingWindowInferer

    roi = [min(int(r), round_up(n, multiple)) for r, n in zip(roi_size, x.shape[2:], strict=True)]
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=int(sw_batch_size), overlap=float(overlap),
                                   mode="gaussian", padding_mode="constant", cval=0.0, sw_device=device,
                                   device=torch.device("cpu"))
    amp = Precision(device, precision)
    ensemble = views(x.dim() - 2, transpose, tta_views) if tta else [((), False)]

    def run(v: torch.Tensor) -> torch.Tensor:
        with amp.autocast():
            return net(v).float()

    def predict(t: torch.Tensor) -> torch.Tensor:
        y = average(run, t, ensemble)
        return finish(y) if finish is not None else y

    with torch.inference_mode():
        return inferer(x, predict)
