"""CycleGAN (Zhu et al. 2017) for unpaired modality translation (T1w <-> T2w, MR <-> CT), 2D or 3D.

Two generators (`G_AB`: source -> target, `G_BA`: target -> source; ResNet generators of
`pipeline.nets.resnet_generator` or MONAI's UNet) and two PatchGAN discriminators (MONAI
`PatchDiscriminator`, instance norm; `D_A` judges domain A, `D_B` domain B). One step, as in the reference
implementation (junyanz/pytorch-CycleGAN-and-pix2pix, `models/cycle_gan_model.py`):

1. forward: ``fake_B = G_AB(A)``, ``rec_A = G_BA(fake_B)``, ``fake_A = G_BA(B)``, ``rec_B = G_AB(fake_A)``;
2. generator step with both discriminators frozen:
   ``adv(D_B(fake_B)) + adv(D_A(fake_A)) + lambda_cycle (|rec_A - A| + |rec_B - B|)
   + lambda_identity lambda_cycle (|G_AB(B) - B| + |G_BA(A) - A|)``;
3. discriminator step: real images against fakes drawn from a pool of 50 past fakes (`ImagePool`),
   ``1/2 J_D`` per discriminator.

Adversarial terms come from `pipeline.gan.losses` (least squares by default; ``nonsaturating`` is the classic
log loss). The reference's least-squares generator term is ``MSE(D(G(x)), 1)``, twice our ``g_loss`` (which
carries the 1/2 of Mao et al.), so it is doubled here to keep the reference's balance against lambda 10.
Adam (betas 0.5/0.999; the reference's 2e-4, the demo default 5e-4) for both pairs; the learning rate is
constant for `n_steps`, then decays linearly to 0 over `n_steps_decay` (`LambdaLR`, stepped per iteration by
the loop).

Data: images in [0, 1] (the preprocess stage's normalisation) are mapped to the generators' [-1, 1] inside
the model. The sampler (`UnpairedSampler`) draws A and B crops from disjoint sets of subjects in every step,
so the model never sees a registered pair. Training can run on a coarser grid (`train_downsample`); inference
then averages the input down by the same factor and interpolates the output back onto the input grid.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import __version__
from pipeline.config import CycleGANConfig, to_dict
from pipeline.gan.base import GANModel, Precision, adam
from pipeline.gan.checkpoint import save_checkpoint
from pipeline.gan.image_pool import ImagePool
from pipeline.gan.loop import step_seed
from pipeline.gan.losses import d_loss, g_loss
from pipeline.io.nifti import load_nifti
from pipeline.nets.resnet_generator import build_generator, init_weights, size_multiple
from pipeline.nets.tta import average, views
from pipeline.volume_cache import LazyVolumes, VolumeCache, pad_to

log = logging.getLogger(__name__)

MODEL_FORMAT = "medgan-model/1"
TASK = "translation"
DIRECTIONS = ("A2B", "B2A")
#: factor between the reference implementation's generator term and `g_loss` (see the module docstring)
_G_ADV_SCALE = {"lsgan": 2.0}


# ------------------------------------------------------------------------------------------ data
@dataclasses.dataclass
class Volume:
    """One subject's image of one modality, with its foreground mask (arrays (x, y, z), values in [0, 1])."""

    subject: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray


def _read_volume(row: dict, modality: str) -> Volume:
    """One subject's image of `modality` and its mask, from its subjects.tsv row (checked)."""
    path, mask_path = row[modality], row["mask"]
    image, affine = load_nifti(path)
    mask, _ = load_nifti(mask_path)
    if mask.shape != image.shape:
        raise ValueError(f"{mask_path}: mask shape {mask.shape} differs from {path} {image.shape}")
    if not mask.any():
        raise ValueError(f"{mask_path}: empty foreground mask")
    return Volume(row["subject"], image, mask > 0, affine)


def domain_volumes(data_dir: str | Path, modality: str, split: str | Sequence[str]) -> LazyVolumes[Volume]:
    """The volumes of `modality` of the subjects of `split` in `data_dir/subjects.tsv` (preprocess output),
    read from disk on each access (one in memory at a time when iterated; ``.names`` are the subjects)."""
    from pipeline.data import subject_rows

    table, rows = subject_rows(data_dir, split)
    if rows and modality not in rows[0]:
        raise ValueError(f"{table}: no column {modality!r} (columns: {', '.join(rows[0])})")
    kept = [r for r in rows if r.get(modality) is not None and r.get("mask") is not None]
    return LazyVolumes([r["subject"] for r in kept], lambda i: _read_volume(kept[i], modality))


def load_domain(data_dir: str | Path, modality: str, split: str | Sequence[str]) -> list[Volume]:
    """The volumes of `modality` of the subjects of `split`, all read into memory (see `domain_volumes`)."""
    return list(domain_volumes(data_dir, modality, split))


def _names(vols: Sequence[Volume]) -> list[str]:
    """The subjects of `vols` (without reading a lazy sequence's volumes)."""
    return list(vols.names) if isinstance(vols, LazyVolumes) else [v.subject for v in vols]


def downsample(x: torch.Tensor, factor: int, spatial_dims: int) -> torch.Tensor:
    """Block-average (N, C, *spatial) by `factor` along its spatial axes (zero-padded up to a multiple)."""
    if factor == 1:
        return x
    pad: list[int] = []
    for n in reversed(x.shape[2:]):
        pad += [0, (-n) % factor]
    x = F.pad(x, pad)
    return (F.avg_pool2d if spatial_dims == 2 else F.avg_pool3d)(x, factor)


def upsample(x: torch.Tensor, factor: int, size: Sequence[int]) -> torch.Tensor:
    """Inverse geometry of `downsample`: (bi/tri)linear interpolation by `factor`, cropped to `size`."""
    if factor == 1:
        return x
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    up = F.interpolate(x, scale_factor=factor, mode=mode, align_corners=False)
    return up[(slice(None), slice(None), *(slice(0, int(n)) for n in size))]


def _round_up(n: int, m: int) -> int:
    return -(-int(n) // m) * m


class UnpairedSampler:
    """Batches ``{"A": (N, 1, *patch), "B": (N, 1, *patch)}``; ``sampler(step)`` is a pure function of (seed, step).

    Truly unpaired: in every step the training subjects are shuffled into two disjoint groups; the A crops come
    from the first group, the B crops from the second, so no subject contributes to both domains of a step
    (``A_subject`` / ``B_subject`` in the batch say which subjects were used). Crops are centred on random
    foreground voxels (2D: the slice through it across `slice_axis`); volumes smaller than a crop are
    zero-padded. With `train_downsample` the volumes are block-averaged first (the crops are on the coarse grid).
    During the first `warmup_steps` steps the crops come from a grid `warmup_downsample` times coarser still,
    no larger than its whole slices (a resolution curriculum: the contrast mapping is found on small images
    with the whole anatomy in view, then refined at full resolution; the image pools restart at the switch).

    Args:
        a_vols, b_vols: the training volumes of the source and target modality.
        cfg: the `cyclegan` section (spatial_dims, slice_axis, patch_size, batch_size, flip, train_downsample,
            warmup_steps, warmup_downsample).
        seed: the run's seed.
        multiple: the generator's size multiple (whole-slice crops are rounded up to it).
        cache: keep the prepared images and crop centres in this on-disk cache, read crop by crop (memory
            independent of the number of subjects; `close` deletes it); None: in memory. With lazy volumes
            (`domain_volumes`) one subject is in memory at a time while the sampler is built.
    """

    def __init__(self, a_vols: Sequence[Volume], b_vols: Sequence[Volume], cfg: CycleGANConfig, seed: int,
                 multiple: int = 4, cache: VolumeCache | None = None) -> None:
        if not a_vols or not b_vols:
            raise ValueError(f"unpaired sampling needs training volumes of both {cfg.source} ({len(a_vols)}) and "
                             f"{cfg.target} ({len(b_vols)})")
        subjects = sorted(set(_names(a_vols)) | set(_names(b_vols)))
        if len(subjects) < 2:
            raise ValueError(f"unpaired sampling needs at least 2 training subjects, got {subjects}")
        self.seed, self.batch_size, self.flip = seed, cfg.batch_size, cfg.flip
        self.spatial_dims, self.factor = cfg.spatial_dims, cfg.train_downsample
        self.slice_axis = cfg.slice_axis if cfg.spatial_dims == 2 else None
        self.axes = [a for a in range(3) if a != self.slice_axis]
        self.subjects = subjects
        self.warmup_steps = cfg.warmup_steps if cfg.warmup_downsample > 1 else 0
        self.cache = cache
        # grids: the training grid, and (for the warm-up) a coarser one; each {domain: {subject: (image, centres)}}
        self.grids, self.patches = [], []
        for factor in (self.factor, self.factor * cfg.warmup_downsample)[: 2 if self.warmup_steps else 1]:
            domains = {"A": self._prepare(a_vols, factor, "A"), "B": self._prepare(b_vols, factor, "B")}
            shapes = [v[0].shape for d in domains.values() for v in d.values()]
            whole = {a: _round_up(max(s[a] for s in shapes), multiple) for a in self.axes}
            if not cfg.patch_size:
                patch = whole
            elif self.grids:  # warm-up grid: crops no larger than its (whole) slices, not mostly padding
                patch = {a: min(cfg.patch_size, whole[a]) for a in self.axes}
            else:
                patch = {a: cfg.patch_size for a in self.axes}
            for dom in domains.values():
                for key, (image, centres) in dom.items():
                    dom[key] = (pad_to(image, [patch.get(a, 0) for a in range(image.ndim)]), centres)
            self.grids.append(domains)
            self.patches.append(patch)
        self.domains, self.patch = self.grids[0], self.patches[0]
        both = [s for s in subjects if s in self.domains["A"] and s in self.domains["B"]]
        self.only = {d: [s for s in subjects if s in self.domains[d] and s not in both] for d in ("A", "B")}
        self.both = both
        log.info("unpaired sampler: %d subject(s) (%d with A only, %d with B only), %dD crops %s, batch %d, "
                 "downsample %d%s", len(subjects), len(self.only["A"]), len(self.only["B"]), self.spatial_dims,
                 [self.patch[a] for a in self.axes], self.batch_size, self.factor,
                 f"; warm-up: {self.warmup_steps} steps at downsample {self.factor * cfg.warmup_downsample}, crops "
                 f"{[self.patches[-1][a] for a in self.axes]}" if self.warmup_steps else "")

    def _prepare(self, vols: Sequence[Volume], factor: int, tag: str = "") -> dict[str, tuple[Any, Any]]:
        """Per subject: the image on a grid `factor` times coarser and the candidate crop centres (foreground),
        as arrays or, with a cache, as `CachedArray` handles (one subject in memory at a time)."""
        out: dict[str, tuple[Any, Any]] = {}
        order = "F" if self.slice_axis == 2 else "C"  # on disk, slices across the last axis are contiguous
        for v in vols:
            image, mask = v.image, v.mask.astype(np.float32)
            if factor > 1:  # 2D: only the in-plane axes are coarsened
                image, mask = (_coarsen(a, factor, self.slice_axis) for a in (image, mask))
            centres = np.argwhere(mask >= 0.5).astype(np.int32)
            if len(centres) == 0:
                raise ValueError(f"{v.subject}: empty foreground mask on the training grid")
            image = np.ascontiguousarray(image, dtype=np.float32)
            if self.cache is not None:
                name = f"cyc{tag}{factor}_{len(out):05d}"
                image = self.cache.put(f"{name}_image", image, order)
                centres = self.cache.put(f"{name}_centres", centres)
            out[v.subject] = (image, centres)
        return out

    def close(self) -> None:
        """Delete the on-disk cache, if any (the sampler cannot draw batches afterwards)."""
        if self.cache is not None:
            self.cache.close()

    def groups(self, rng: np.random.Generator) -> tuple[list[str], list[str]]:
        """Disjoint subject groups for the A and B crops of one step.

        Subjects with both modalities are shuffled and split in half; those with one go to their own side.
        """
        perm = [self.both[i] for i in rng.permutation(len(self.both))]
        half = len(perm) // 2
        if not self.only["A"]:
            half = max(half, 1)
        if not self.only["B"]:
            half = min(half, len(perm) - 1)
        return self.only["A"] + perm[:half], perm[half:] + self.only["B"]

    def _crop(self, image: np.ndarray, centres: np.ndarray, patch: dict[int, int],
              rng: np.random.Generator) -> np.ndarray:
        centre = centres[int(rng.integers(len(centres)))]
        sl = []
        for a in range(3):
            if a == self.slice_axis:
                sl.append(int(centre[a]))
                continue
            p, n = patch[a], image.shape[a]
            start = int(np.clip(int(centre[a]) - p // 2, 0, n - p))
            sl.append(slice(start, start + p))
        crop = image[tuple(sl)]
        flips = [i for i in range(crop.ndim) if self.flip and rng.random() < 0.5]
        return np.flip(crop, flips) if flips else crop

    def state_dict(self) -> dict[str, Any]:
        """Nothing to restore (batches depend on (seed, step) only); the seed is checked on resume."""
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"checkpoint sampler seed {state.get('seed')} != this run's seed {self.seed}")

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = step_seed(self.seed, step)
        grid = 1 if step < self.warmup_steps else 0
        domains, patch = self.grids[grid], self.patches[grid]
        group_a, group_b = self.groups(rng)
        batch: dict[str, torch.Tensor] = {}
        for dom, group in (("A", group_a), ("B", group_b)):
            crops, ids = [], []
            for _ in range(self.batch_size):
                subject = group[int(rng.integers(len(group)))]
                image, centres = domains[dom][subject]
                crops.append(self._crop(image, centres, patch, rng))
                ids.append(self.subjects.index(subject))
            batch[dom] = torch.from_numpy(np.stack(crops)[:, None].copy())
            batch[f"{dom}_subject"] = torch.tensor(ids, dtype=torch.int64)
        return batch


def _coarsen(x: np.ndarray, factor: int, slice_axis: int | None) -> np.ndarray:
    """Block-average a volume by `factor` along every axis but `slice_axis` (None: all three)."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if slice_axis is None:
        return downsample(t[None, None], factor, 3)[0, 0].numpy()
    t = torch.movedim(t, slice_axis, 0)[:, None]
    return torch.movedim(downsample(t, factor, 2)[:, 0], 0, slice_axis).numpy()


# ------------------------------------------------------------------------------------------ networks
def generator_kwargs(cfg: CycleGANConfig) -> dict[str, Any]:
    """`build_generator` arguments (stored in the model file)."""
    kind = f"resnet_{cfg.n_blocks}blocks" if cfg.generator == "resnet" else "unet"
    return {"kind": kind, "spatial_dims": cfg.spatial_dims, "in_channels": 1, "out_channels": 1, "ngf": cfg.ngf}


def build_discriminator(cfg: CycleGANConfig) -> nn.Module:
    """MONAI's PatchGAN discriminator with instance norm (70x70 receptive field in 2D with 3 layers).

    Convolutions keep their bias, as in the reference with instance norm (2.765 M parameters for 64 filters
    and 3 input channels, the reference's count).
    """
    from monai.networks.nets import PatchDiscriminator

    from pipeline.nets.fastconv import use_single_output_convs

    return use_single_output_convs(PatchDiscriminator(spatial_dims=cfg.spatial_dims, channels=cfg.ndf, in_channels=1,
                                                      out_channels=1, num_layers_d=cfg.d_layers, norm="INSTANCE",
                                                      bias=True))


def linear_decay(n_steps: int, n_steps_decay: int):
    """The reference's 'linear' policy per step: 1 for `n_steps`, then linearly towards 0 over `n_steps_decay`."""

    def factor(step: int) -> float:
        return 1.0 - max(0, step - n_steps) / float(n_steps_decay + 1)

    return factor


# ------------------------------------------------------------------------------------------ model
class CycleGAN(GANModel):
    """CycleGAN unpaired modality translation (two generators, two PatchGAN discriminators)."""

    name: ClassVar[str] = "cyclegan"
    config_class: ClassVar[type] = CycleGANConfig
    loss_names: ClassVar[tuple[str, ...]] = (
        "G_AB", "G_BA", "cycle_A", "cycle_B", "idt_A", "idt_B", "G", "D_A", "D_B",
    )

    def __init__(
        self,
        cfg: CycleGANConfig,
        device: str | torch.device = "cpu",
        precision: Precision | None = None,
        seed: int = 0,
        meta: dict[str, Any] | None = None,
        roi_size: Sequence[int] | None = None,
    ) -> None:
        device = torch.device(device)
        super().__init__(device, precision or Precision(device, cfg.precision))
        self.cfg = cfg
        self.meta = dict(meta or {})
        self.g_kwargs = generator_kwargs(cfg)
        self.roi_size = [int(r) for r in roi_size] if roi_size else [cfg.patch_size or 64] * cfg.spatial_dims
        smallest = 3 * 2**cfg.d_layers
        if min(self.roi_size) < smallest:
            raise ValueError(f"cyclegan: crops of {self.roi_size} voxels are too small for a {cfg.d_layers}-layer "
                             f"PatchGAN discriminator (needs >= {smallest}); raise patch_size or lower d_layers")
        g_kw = dict(self.g_kwargs)
        nets: dict[str, nn.Module] = {
            "G_AB": init_weights(build_generator(g_kw.pop("kind"), **g_kw)),
            "G_BA": init_weights(build_generator(self.g_kwargs["kind"], **g_kw)),
            "D_A": build_discriminator(cfg),
            "D_B": build_discriminator(cfg),
        }
        self.channels_last = self.device.type == "cuda" and cfg.spatial_dims == 2
        for k, net in nets.items():
            nets[k] = net.to(self.device, memory_format=torch.channels_last) if self.channels_last else net.to(self.device)
        self.networks = nets
        betas = tuple(cfg.betas)
        self.optimizers = {
            "G": adam(itertools.chain(nets["G_AB"].parameters(), nets["G_BA"].parameters()), lr=cfg.lr, betas=betas),
            "D": adam(itertools.chain(nets["D_A"].parameters(), nets["D_B"].parameters()), lr=cfg.lr, betas=betas),
        }
        decay = linear_decay(cfg.n_steps, cfg.n_steps_decay)
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(opt, decay) for k, opt in self.optimizers.items()}
        # pools of past fakes of each domain, each with its own seeded generator (saved in checkpoints)
        self.pools = {"A": ImagePool(cfg.pool_size, seed=seed * 2 + 1), "B": ImagePool(cfg.pool_size, seed=seed * 2 + 2)}
        self.real: dict[str, torch.Tensor] = {}
        self.out: dict[str, torch.Tensor] = {}

    @property
    def total_steps(self) -> int:
        return self.cfg.n_steps + self.cfg.n_steps_decay

    # -- data -----------------------------------------------------------------------------------------
    @classmethod
    def prepare_data(cls, cfg: CycleGANConfig, data_dir: str | Path, seed: int,
                     cache_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
        """The unpaired training sampler and the constructor arguments it implies (seed, ROI, metadata).

        The training volumes are read one at a time and cached on disk in a new folder under `cache_dir`
        (None: the system's temporary folder); `sampler.close()` deletes it.
        """
        a_vols = domain_volumes(data_dir, cfg.source, "train")
        b_vols = domain_volumes(data_dir, cfg.target, "train")
        multiple = size_multiple(build_generator(generator_kwargs(cfg)["kind"], cfg.spatial_dims, ngf=1))
        if cfg.patch_size % multiple:
            raise ValueError(f"cyclegan.patch_size {cfg.patch_size} is not a multiple of {multiple}, which the "
                             f"{cfg.generator} generator needs")
        cache = VolumeCache(cache_dir, prefix="cyclegan-")
        try:
            sampler = UnpairedSampler(a_vols, b_vols, cfg, seed, multiple, cache=cache)
        except BaseException:
            cache.close()
            raise
        meta: dict[str, Any] = {
            "n_train_subjects": len(sampler.subjects),
            "normalisation": {cfg.source: _normalisation(data_dir, a_vols, cfg.source),
                              cfg.target: _normalisation(data_dir, b_vols, cfg.target)},
        }
        roi = [sampler.patch[a] for a in sampler.axes]
        return sampler, {"seed": seed, "meta": meta, "roi_size": roi}

    # -- the contract ---------------------------------------------------------------------------------
    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        """Take ``A`` and ``B`` (values in [0, 1]) and map them to the generators' [-1, 1]."""
        self.real = {}
        for dom in ("A", "B"):
            x = batch[dom].to(self.device).float() * 2.0 - 1.0
            self.real[dom] = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def optimize_step(self, step: int) -> None:
        cfg, nets, amp = self.cfg, self.networks, self.precision
        real_a, real_b = self.real["A"], self.real["B"]
        adv_scale = _G_ADV_SCALE.get(cfg.gan_loss, 1.0)
        lam_idt = cfg.lambda_identity * cfg.lambda_cycle
        losses: dict[str, torch.Tensor] = {}

        # forward
        with amp.autocast():
            fake_b = nets["G_AB"](real_a)
            rec_a = nets["G_BA"](fake_b)
            fake_a = nets["G_BA"](real_b)
            rec_b = nets["G_AB"](fake_a)

        # generator step, discriminators frozen
        opt_g = self.optimizers["G"]
        opt_g.zero_grad(set_to_none=True)
        with self.frozen("D_A", "D_B"):
            with amp.autocast():
                logits_fake_b = nets["D_B"](fake_b)[-1]
                logits_fake_a = nets["D_A"](fake_a)[-1]
            losses["G_AB"] = adv_scale * g_loss(logits_fake_b, cfg.gan_loss)
            losses["G_BA"] = adv_scale * g_loss(logits_fake_a, cfg.gan_loss)
            losses["cycle_A"] = F.l1_loss(rec_a.float(), real_a)
            losses["cycle_B"] = F.l1_loss(rec_b.float(), real_b)
            total = losses["G_AB"] + losses["G_BA"] + cfg.lambda_cycle * (losses["cycle_A"] + losses["cycle_B"])
            if lam_idt > 0:
                with amp.autocast():
                    idt_b = nets["G_AB"](real_b)  # G_AB should leave B images as they are
                    idt_a = nets["G_BA"](real_a)
                losses["idt_A"] = F.l1_loss(idt_a.float(), real_a)
                losses["idt_B"] = F.l1_loss(idt_b.float(), real_b)
                total = total + lam_idt * (losses["idt_A"] + losses["idt_B"])
            losses["G"] = total
            amp.backward(total)
            amp.step(opt_g)

        # discriminator step, generators frozen, fakes from the history pools
        opt_d = self.optimizers["D"]
        opt_d.zero_grad(set_to_none=True)
        with self.frozen("G_AB", "G_BA"):
            pooled_b = self.pools["B"].query(fake_b.detach())
            pooled_a = self.pools["A"].query(fake_a.detach())
            with amp.autocast():
                real_b_logits, fake_b_logits = nets["D_B"](real_b)[-1], nets["D_B"](pooled_b)[-1]
                real_a_logits, fake_a_logits = nets["D_A"](real_a)[-1], nets["D_A"](pooled_a)[-1]
            losses["D_B"] = 0.5 * d_loss(real_b_logits, fake_b_logits, cfg.gan_loss)
            losses["D_A"] = 0.5 * d_loss(real_a_logits, fake_a_logits, cfg.gan_loss)
            amp.backward(losses["D_A"] + losses["D_B"])
            amp.step(opt_d)

        self.out = {"fake_B": fake_b.detach(), "rec_A": rec_a.detach(), "fake_A": fake_a.detach(),
                    "rec_B": rec_b.detach()}
        self._losses = {k: v.detach() for k, v in losses.items()}

    def visuals(self) -> dict[str, torch.Tensor]:
        """Real, translated and reconstructed images of both domains, in [0, 1]."""
        items = {"real_A": self.real.get("A"), "real_B": self.real.get("B"), **self.out}
        return {k: (v.float() + 1.0) / 2.0 for k, v in items.items() if v is not None}

    def extra_state(self) -> dict[str, Any]:
        return {"pools": {k: p.state_dict() for k, p in self.pools.items()}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for k, pool in self.pools.items():
            if "pools" in state:
                pool.load_state_dict(state["pools"][k])
                pool.to(self.device)

    # -- export ---------------------------------------------------------------------------------------
    def model_file(self, steps: int) -> dict[str, Any]:
        """The self-describing model file: both generators and everything inference needs (weights_only-safe)."""
        cfg = self.cfg
        return {
            "format": MODEL_FORMAT,
            "task": TASK,
            "kind": "cyclegan",
            "package_version": __version__,
            "torch_version": str(torch.__version__),
            "generator": {"builder": "pipeline.nets.resnet_generator.build_generator",
                          "kwargs": copy.deepcopy(self.g_kwargs)},
            "state_dicts": {d: {k: v.detach().to("cpu") for k, v in self.networks[g].state_dict().items()}
                            for d, g in (("A2B", "G_AB"), ("B2A", "G_BA"))},
            "translation": {
                "source": cfg.source,
                "target": cfg.target,
                "spatial_dims": cfg.spatial_dims,
                "slice_axis": cfg.slice_axis if cfg.spatial_dims == 2 else None,
                "train_downsample": cfg.train_downsample,
            },
            "normalisation": copy.deepcopy(self.meta.get("normalisation", {})),
            "inference": {"roi_size": list(self.roi_size), "sw_batch_size": cfg.sw_batch_size,
                          "overlap": cfg.overlap, "tta": cfg.tta},
            "training": {"steps": steps, "n_train_subjects": self.meta.get("n_train_subjects"),
                         "config": to_dict(cfg)},
        }

    def export(self, out_dir: Path) -> list[Path]:
        return [save_checkpoint(self.model_file(self.total_steps), Path(out_dir) / "model.pt")]

    def validate(self, data_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
        """PSNR (dB) inside the mask of the A -> B translation on validation subjects that have both modalities
        (output clipped to [0, 1]); logged and returned - a quick check, not the evaluation stage."""
        from pipeline.gan.checkpoint import load_checkpoint

        a_vols = domain_volumes(data_dir, self.cfg.source, "val")  # read one subject at a time, below
        b_vols = domain_volumes(data_dir, self.cfg.target, "val")
        common = sorted(set(a_vols.names) & set(b_vols.names))
        if not common:
            return {}
        blob = load_checkpoint(Path(out_dir) / "model.pt")
        gen = load_generator(blob, "A2B", self.device)
        vals = []
        for s in common:
            out = translate(a_vols[a_vols.names.index(s)].image, gen, blob, self.device)
            b = b_vols[b_vols.names.index(s)]
            err = (np.clip(out, 0.0, 1.0) - b.image)[b.mask]
            vals.append(float(10 * np.log10(1.0 / max(float(np.mean(err**2)), 1e-12))))
        log.info("validation PSNR of %s -> %s in the mask (%d subject(s)): %.2f dB", self.cfg.source,
                 self.cfg.target, len(common), float(np.mean(vals)))
        return {"psnr_db": float(np.mean(vals)), "subjects": len(common)}


def _normalisation(data_dir: str | Path, vols: Sequence[Volume], modality: str) -> dict[str, Any]:
    """The recorded normalisation of `modality` (method and its fixed parameters) from normalisation.json."""
    keys = ("method", "percentiles", "window", "unit", "range")
    for subject in _names(vols):
        path = Path(data_dir) / subject / "normalisation.json"
        if path.is_file():
            info = json.loads(path.read_text()).get(modality, {})
            return {k: info[k] for k in keys if k in info}
    log.warning("no normalisation.json for %s under %s; the model file records none", modality, data_dir)
    return {"method": "unknown"}


# ------------------------------------------------------------------------------------------ inference
def load_generator(blob: dict[str, Any], direction: str, device: str | torch.device = "cpu") -> nn.Module:
    """The generator of `direction` (A2B: source -> target, B2A: back) of a CycleGAN model file, in eval mode."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    kw = dict(blob["generator"]["kwargs"])
    net = build_generator(kw.pop("kind"), **kw)
    net.load_state_dict(blob["state_dicts"][direction])
    return net.to(torch.device(device)).eval()


def translate(
    volume: np.ndarray,
    generator: nn.Module,
    blob: dict[str, Any],
    device: str | torch.device = "cpu",
    roi_size: Sequence[int] | None = None,
    sw_batch_size: int | None = None,
    overlap: float | None = None,
    precision: str = "auto",
    tta: bool | None = None,
) -> np.ndarray:
    """Translate a whole (x, y, z) volume (values in [0, 1]); the output (in [0, 1]) has the input's grid.

    2D models run on the slices across the model's slice axis, 3D models on the volume; both through MONAI's
    `SlidingWindowInferer` with windows of the training crop size (Gaussian-blended), so instance norm sees
    what it saw in training. With `train_downsample` the input is block-averaged first and the output
    interpolated back. With `tta` (default: the model file's ``inference.tta``) every window is
    translated in each of its 8 flips/transposes (2D; 3D: its 8 flips) and the outputs, mapped back, are
    averaged (test-time augmentation: the hallucinated texture of a GAN differs between flips, the
    anatomy does not, so the average is closer to the target).
    """
    from monai.inferers import SlidingWindowInferer

    device = torch.device(device)
    info, inference = blob["translation"], blob.get("inference", {})
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    two_d = info["spatial_dims"] == 2
    factor = int(info.get("train_downsample", 1))
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    x = torch.movedim(x, info["slice_axis"], 0)[:, None] if two_d else x[None, None]  # (N, 1, *spatial)
    size = x.shape[2:]
    x = downsample(x, factor, 2 if two_d else 3)
    multiple = size_multiple(generator)
    roi = [int(r) for r in (roi_size or inference.get("roi_size") or [64] * len(x.shape[2:]))]
    # windows no larger than the (padded) image, always a multiple of the generator's factor
    roi = [min(r, _round_up(n, multiple)) for r, n in zip(roi, x.shape[2:], strict=True)]
    inferer = SlidingWindowInferer(
        roi_size=roi, sw_batch_size=int(sw_batch_size or inference.get("sw_batch_size", 16)),
        overlap=float(inference.get("overlap", 0.5) if overlap is None else overlap), mode="gaussian",
        padding_mode="constant", cval=0.0, sw_device=device, device=torch.device("cpu"),
    )
    amp = Precision(device, precision)
    tta = bool(inference.get("tta", False) if tta is None else tta)
    tta_views = views(x.dim() - 2, two_d) if tta else [((), False)]

    def run(v: torch.Tensor) -> torch.Tensor:
        with amp.autocast():
            return generator(v * 2.0 - 1.0).float()

    def predict(t: torch.Tensor) -> torch.Tensor:
        return (average(run, t, tta_views) + 1.0) / 2.0  # [0, 1] <-> the generator's [-1, 1]

    with torch.inference_mode():
        out = inferer(x, predict)
    out = upsample(out, factor, size)
    out = torch.movedim(out[:, 0], 0, info["slice_axis"]) if two_d else out[0, 0]
    if tuple(out.shape) != tuple(volume.shape):
        raise RuntimeError(f"output shape {tuple(out.shape)} != input shape {tuple(volume.shape)}")
    return out.numpy().astype(np.float32)


def run_inference(blob: dict[str, Any], args: Any) -> None:
    """`python -m pipeline infer` for a translation model file (`--direction A2B` or `B2A`).

    The input is expected normalised to [0, 1] as by the preprocess stage; `--normalise` applies the model's
    recorded normalisation of the input modality to a raw scan (a CT input in HU is windowed automatically).
    A CT output is written in Hounsfield units (the recorded HU window inverted); MR outputs stay in [0, 1].
    """
    from pipeline.infer import _device, _normalise, read_scan
    from pipeline.io.nifti import save_nifti

    direction = args.direction or "A2B"
    if direction not in DIRECTIONS:
        raise ValueError(f"--direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    info = blob["translation"]
    src, dst = (info["source"], info["target"]) if direction == "A2B" else (info["target"], info["source"])
    norms = blob.get("normalisation", {})
    device = _device(args.device)
    data, affine = read_scan(args.input)
    src_norm = norms.get(src, {})
    raw_ct = src_norm.get("method") == "window" and (data.min() < -0.5 or data.max() > 1.5)
    if args.normalise or raw_ct:
        data, _, _ = _normalise(data, src_norm, src)
    elif data.min() < -0.5 or data.max() > 1.5:
        log.warning("%s: intensities span [%.3g, %.3g] but the model expects [0, 1] (use --normalise for raw scans)",
                    args.input, float(data.min()), float(data.max()))
    generator = load_generator(blob, direction, device)
    started = time.perf_counter()
    out = translate(data, generator, blob, device, roi_size=[args.roi_size] * info["spatial_dims"]
                    if getattr(args, "roi_size", 0) else None, sw_batch_size=getattr(args, "sw_batch_size", 0) or None)
    dst_norm = norms.get(dst, {})
    unit = "normalised [0, 1]"
    if dst_norm.get("method") == "window":
        low, high = (float(v) for v in dst_norm["window"])
        out = low + np.clip(out, 0.0, 1.0) * (high - low)
        unit = dst_norm.get("unit", "HU")
    save_nifti(out, affine, args.output)
    log.info("%s -> %s: %s -> %s %s, %s (%.1f s on %s)", args.input, args.output, src, dst, data.shape, unit,
             time.perf_counter() - started, device)
