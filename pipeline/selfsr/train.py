"""Training pairs from a scan's own in-plane slices, and the small 2D network that learns the through-plane step.

SMORE's idea (Zhao et al. 2021; Remedios et al., ECLARE): the in-plane slices of a 2D multi-slice scan are sharp
along both in-plane axes. Re-slicing them along one in-plane axis with the slice profile (`pipeline.selfsr.profile`)
gives a low-resolution image whose degraded axis looks like the through-plane axis; a network trained to undo it
then super-resolves the through-plane axis of sagittal, coronal and diagonal slices.

Pairs: every in-plane slice, degraded along its first axis (and, transposed, along its second), once for the whole
volume; a sample is an aligned crop of (LR, HR) whose degraded axis is the network's first spatial axis. Crops are
drawn inside the foreground. The network is the project's SRResNet (`pipeline.nets.srresnet`), 2D, upsampling the
first axis only (factors (scale, 1)), with a cubic-spline skip (it starts at cubic interpolation and learns the
residual), no normalisation layers, and one sub-pixel convolution at the end (`upsampler: final`): every
convolution runs at LR resolution, which makes inference over whole volumes cheap on a CPU.
Optional SRGAN phase: a VGG-style discriminator and `content + adv_weight * J_G` fine-tuning after the L1 phase.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.selfsr.profile import SliceProfile, reslice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """The settings of one self-supervised training (defaults measured on the corpus, 2 CPU cores)."""

    steps: int = 1500
    batch_size: int = 16
    patch: int = 48  # HR crop side (the degraded side is rounded up to a multiple of the scale)
    channels: int = 32
    n_blocks: int = 6
    lr: float = 1e-3
    adv_steps: int = 0  # > 0: SRGAN fine-tuning steps after the L1 phase
    adv_weight: float = 1e-3
    tta: bool = True  # average the network over the 4 flips of each slice when applying it
    # in-plane rotations (degrees) of the volume the network is applied to, each giving two views: 0 the sagittal
    # and coronal slices, 45 the two diagonal planes (corpus, 4 mm slices: +0.08 dB over the first two alone)
    rotations: tuple[float, ...] = (0.0, 45.0)
    seed: int = 0
    log_every: int = 250


class PairBank:
    """Every in-plane slice of `volume` (x, y, z; z the through-plane axis) with its re-sliced twin."""

    def __init__(self, volume: np.ndarray, scale: int, profile: SliceProfile, spacing_mm: float,
                 foreground: float) -> None:
        self.scale = scale
        hr_x = _crop_to(volume, scale, axis=0)
        hr_y = _crop_to(np.swapaxes(volume, 0, 1), scale, axis=0)  # degraded axis first, again
        # (z, H, W) stacks: H is the degraded axis
        self.hr = [np.ascontiguousarray(np.moveaxis(h, 2, 0), dtype=np.float32) for h in (hr_x, hr_y)]
        self.lr = [np.ascontiguousarray(reslice(h, scale, profile, spacing_mm, axis=1), dtype=np.float32)
                   for h in self.hr]
        self.foreground = foreground

    def sampler(self, patch: int, batch: int, seed: int):
        """`sample(step) -> (lr, hr)` tensors (N, 1, p, patch*) of aligned crops, a pure function of (seed, step)."""
        s = self.scale
        p_lr = max(2, -(-patch // s))
        # one crop size for both orientations (a batch mixes them), no larger than the smaller image
        size = (min([p_lr] + [h.shape[1] // s for h in self.hr]), min([patch] + [h.shape[2] for h in self.hr]))
        sizes = [size, size]
        # candidate crop corners whose HR crop centre lies in the foreground
        corners = []
        for hr, (ph, pw) in zip(self.hr, sizes, strict=True):
            z, a, b = np.nonzero(hr[:, ph * s // 2 :: s, pw // 2 :][:, : hr.shape[1] // s - ph + 1,
                                                                   : hr.shape[2] - pw + 1] > self.foreground)
            corners.append(np.stack([z, a, b], axis=1) if z.size else np.zeros((1, 3), dtype=np.int64))

        def sample(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            rng = np.random.default_rng([seed, step])
            lrs, hrs = [], []
            for _ in range(batch):
                k = int(rng.integers(2))
                ph, pw = sizes[k]
                z, a, b = corners[k][rng.integers(len(corners[k]))]
                lr = self.lr[k][z, a : a + ph, b : b + pw]
                hr = self.hr[k][z, a * s : (a + ph) * s, b : b + pw]
                if rng.random() < 0.5:  # flip along the non-degraded axis
                    lr, hr = lr[:, ::-1], hr[:, ::-1]
                if rng.random() < 0.5:  # flip along the degraded axis (the profile is symmetric)
                    lr, hr = lr[::-1], hr[::-1]
                lrs.append(np.ascontiguousarray(lr))
                hrs.append(np.ascontiguousarray(hr))
            return torch.from_numpy(np.stack(lrs)[:, None]), torch.from_numpy(np.stack(hrs)[:, None])

        return sample


def _crop_to(x: np.ndarray, scale: int, axis: int) -> np.ndarray:
    n = x.shape[axis] - x.shape[axis] % scale
    return np.take(x, np.arange(n), axis=axis)


def build_net(scale: int, settings: TrainSettings) -> torch.nn.Module:
    from pipeline.nets.srresnet import SRResNet

    return SRResNet(spatial_dims=2, factors=(scale, 1), channels=settings.channels, n_blocks=settings.n_blocks,
                    norm="none", interp_skip="bicubic", outer_kernel=3, upsampler="final")


def train_net(bank: PairBank, settings: TrainSettings) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train the network on `bank` (L1 phase, then the optional SRGAN phase); returns it in eval mode and a summary."""
    torch.manual_seed(settings.seed)
    net = build_net(bank.scale, settings)
    sample = bank.sampler(settings.patch, settings.batch_size, settings.seed)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=max(settings.steps, 1),
                                                pct_start=0.05)
    start, running = time.monotonic(), 0.0
    net.train()
    for step in range(settings.steps):
        lr, hr = sample(step)
        loss = F.l1_loss(net(lr), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if (step + 1) % settings.log_every == 0 or step + 1 == settings.steps:
            n = (step % settings.log_every) + 1
            log.info("selfsr step %d/%d  l1 %.5f  %.1f it/s", step + 1, settings.steps, running / n,
                     (step + 1) / (time.monotonic() - start))
            running = 0.0
    summary = {"l1_steps": settings.steps, "l1_seconds": time.monotonic() - start}
    if settings.adv_steps > 0:
        summary.update(_adversarial(net, sample, settings))
    return net.eval(), summary


def _adversarial(net: torch.nn.Module, sample, settings: TrainSettings) -> dict[str, float]:
    """SRGAN's second phase: L1 content loss + adv_weight * non-saturating J_G, a VGG-style discriminator."""
    from pipeline.gan.losses import d_loss, g_loss, set_requires_grad
    from pipeline.nets.discriminators import VGGStyleDiscriminator

    start = time.monotonic()
    disc = VGGStyleDiscriminator(spatial_dims=2, in_channels=1, channels=16)
    opt_g = torch.optim.Adam(net.parameters(), lr=settings.lr / 10, betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(disc.parameters(), lr=settings.lr / 10, betas=(0.9, 0.99))
    for step in range(settings.adv_steps):
        lr, hr = sample(settings.steps + step)
        fake = net(lr)
        set_requires_grad(disc, False)
        loss_g = F.l1_loss(fake, hr) + settings.adv_weight * g_loss(disc(fake)[-1])
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        set_requires_grad(disc, True)
        loss_d = d_loss(disc(hr)[-1], disc(fake.detach())[-1])
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
    return {"adv_steps": settings.adv_steps, "adv_seconds": time.monotonic() - start}


def _ensemble(net: torch.nn.Module, x: torch.Tensor, flips: bool) -> torch.Tensor:
    """`net(x)`, averaged over the 4 flips of both axes when `flips` (the profile is symmetric, so each is valid)."""
    if not flips:
        return net(x)
    out = torch.zeros(())
    for dims in ((), (2,), (3,), (2, 3)):
        y = net(x.flip(dims) if dims else x)
        out = out + (y.flip(dims) if dims else y)
    return out / 4


@torch.no_grad()
def apply_through_plane(net: torch.nn.Module, volume: np.ndarray, scale: int, batch: int = 8,
                        flips: bool = True, rotations: tuple[float, ...] = (0.0,)) -> np.ndarray:
    """Super-resolve axis 2 of `volume` (x, y, z) by `scale`: the network on every slice that contains the
    through-plane axis, in two orthogonal orientations (sagittal (y, z) and coronal (x, z) slices) of the volume
    turned about that axis by each of `rotations` (degrees; 0: unturned), every result turned back, all averaged
    (with `flips`, each slice also averaged over its 4 flips). The in-plane axes must have equal voxel sizes for a
    rotation other than 0. Slices with nothing but 0 are left to cubic interpolation."""
    from scipy import ndimage

    total, n0, n1 = None, volume.shape[0], volume.shape[1]
    for angle in rotations:
        if angle % 360 == 0:
            views = _two_views(net, volume, scale, batch, flips)
        else:  # padded so that the turned volume keeps all of the input; turned back with the same spline
            pad = int(np.ceil(max(n0, n1) * (np.sqrt(2) - 1) / 2)) + 2
            turned = ndimage.rotate(np.pad(volume, ((pad, pad), (pad, pad), (0, 0))), angle, axes=(0, 1),
                                    reshape=False, order=3, mode="constant")
            views = ndimage.rotate(_two_views(net, turned, scale, batch, flips), -angle, axes=(0, 1),
                                   reshape=False, order=3, mode="constant")[pad : pad + n0, pad : pad + n1]
        total = views if total is None else total + views
    return total / len(rotations)


def _two_views(net: torch.nn.Module, volume: np.ndarray, scale: int, batch: int, flips: bool) -> np.ndarray:
    """The sum of the network's through-plane SR of the sagittal and of the coronal slices of `volume`, over 2."""
    outs = []
    for axis in (0, 1):  # sagittal slices (fixed x), coronal slices (fixed y)
        stack = np.moveaxis(volume, axis, 0)  # (n, other in-plane, z)
        images = np.ascontiguousarray(np.swapaxes(stack, 1, 2), dtype=np.float32)  # (n, z, other): z first
        out = np.empty((images.shape[0], images.shape[1] * scale, images.shape[2]), dtype=np.float32)
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i : i + batch, None])
            live = x.flatten(1).abs().amax(dim=1) > 0
            y = net.skip(x)
            if live.any():
                y[live] = _ensemble(net, x[live], flips)
            out[i : i + batch] = y[:, 0].numpy()
        outs.append(np.moveaxis(np.swapaxes(out, 1, 2), 0, axis))
    return (outs[0] + outs[1]) / 2
