"""A toy GAN family for the "adding a family touches one module and one config block" test.

`tests/workflow/test_add_family.py` copies this file into a copy of the repository as `pipeline/models/toy.py`,
adds its registry entry and its config block, and runs the whole workflow with `models: [toy]`. It is a real
(tiny) family: paired T1w -> T2w translation of 2D slices by a one-layer residual generator, with the classic
non-saturating adversarial loss plus L1, against a one-layer patch discriminator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from pipeline.config import Section
from pipeline.gan.base import Precision, adam
from pipeline.gan.checkpoint import save_checkpoint
from pipeline.gan.losses import d_loss, g_loss
from pipeline.gan.seeding import step_seed
from pipeline.models.contract import Family, Output, inference_settings
from pipeline.nets.windows import as_batch, from_batch, sliding_window


class ToyConfig(Section):
    """Toy paired translation (tests only)."""

    where: ClassVar[str] = "toy"
    source: str = Field("T1w", description="Input modality.")
    target: str = Field("T2w", description="Output modality.")
    n_steps: int = Field(4, ge=1, description="Training steps.")
    batch_size: int = Field(2, ge=1, description="Slices per step.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    l1_weight: float = Field(10.0, ge=0, description="Weight of the L1 term.")
    log_every: int = Field(1, ge=1, description="Log every this many steps.")
    checkpoint_every: int = Field(2, ge=1, description="Checkpoint every this many steps.")
    tta: bool = Field(False, description="Test-time augmentation at inference.")


class PairedSlices:
    """Axial slices of the same subject in both modalities; ``sampler(step)`` is a pure function of (seed, step)."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], batch_size: int, seed: int) -> None:
        self.pairs, self.batch_size, self.seed = pairs, batch_size, seed

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = step_seed(self.seed, step)
        a, b = [], []
        for _ in range(self.batch_size):
            src, dst = self.pairs[int(rng.integers(len(self.pairs)))]
            k = int(rng.integers(src.shape[2]))
            a.append(src[None, :, :, k])
            b.append(dst[None, :, :, k])
        return {"A": torch.from_numpy(np.stack(a)), "B": torch.from_numpy(np.stack(b))}

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ToyGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class Toy(Family):
    """Toy paired translation (tests only)."""

    name: ClassVar[str] = "toy"
    config_class: ClassVar[type] = ToyConfig
    file_task: ClassVar[str] = "toy-translation"
    inference_keys: ClassVar[tuple[str, ...]] = ("tta",)
    loss_names: ClassVar[tuple[str, ...]] = ("G", "L1", "D")

    def __init__(self, cfg: ToyConfig, device: str | torch.device = "cpu", precision: Precision | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        device = torch.device(device)
        super().__init__(device, precision or Precision(device, "fp32"))
        self.cfg, self.meta = cfg, dict(meta or {})
        self.networks = {"G": ToyGenerator().to(device), "D": nn.Conv2d(1, 1, 4, stride=2).to(device)}
        self.optimizers = {k: adam(n.parameters(), lr=cfg.lr, betas=(0.5, 0.999)) for k, n in self.networks.items()}

    @property
    def total_steps(self) -> int:
        return self.cfg.n_steps

    @classmethod
    def prepare_data(cls, cfg: ToyConfig, data_dir: str | Path, seed: int,
                     cache_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
        from pipeline.data.volumes import domain_volumes, normalisation_method, recorded_normalisation

        a, b = (domain_volumes(data_dir, m, "train") for m in (cfg.source, cfg.target))
        both = sorted(set(a.names) & set(b.names))
        pairs = [(a[a.names.index(s)].image, b[b.names.index(s)].image) for s in both]
        norms = {m: normalisation_method(recorded_normalisation(data_dir, both, m)) for m in (cfg.source, cfg.target)}
        return PairedSlices(pairs, cfg.batch_size, seed), {"meta": {"normalisation": norms}}

    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        self.real = {k: v.to(self.device) for k, v in batch.items()}

    def optimize_step(self, step: int) -> None:
        G, D = self.networks["G"], self.networks["D"]
        fake = G(self.real["A"])
        self.optimizers["G"].zero_grad(set_to_none=True)
        with self.frozen("D"):
            l1 = (fake - self.real["B"]).abs().mean()
            total = g_loss(D(fake), "nonsaturating") + self.cfg.l1_weight * l1
            total.backward()
            self.optimizers["G"].step()
        self.optimizers["D"].zero_grad(set_to_none=True)
        with self.frozen("G"):
            loss_d = d_loss(D(self.real["B"]), D(fake.detach()), "nonsaturating")
            loss_d.backward()
            self.optimizers["D"].step()
        self._losses = {"G": total.detach(), "L1": l1.detach(), "D": loss_d.detach()}

    def export(self, out_dir: Path) -> list[Path]:
        blob = {**self.model_file_header("toy"), "state_dict": self.networks["G"].state_dict(),
                "translation": {"source": self.cfg.source, "target": self.cfg.target},
                "normalisation": self.meta.get("normalisation", {}), "inference": {"tta": self.cfg.tta}}
        return [save_checkpoint(blob, Path(out_dir) / "model.pt")]

    # -- the family contract ---------------------------------------------------------------------------
    @classmethod
    def outputs(cls, cfg: ToyConfig) -> list[Output]:
        return [Output("toy", "toy", "model.pt", "translation", cfg.source, cfg.target, cfg.target)]

    @classmethod
    def load_generator(cls, blob: dict[str, Any], direction: str | None, device: str | torch.device) -> nn.Module:
        net = ToyGenerator()
        net.load_state_dict(blob["state_dict"])
        return net.to(torch.device(device)).eval()

    @classmethod
    def io_modalities(cls, blob: dict[str, Any], direction: str | None) -> tuple[tuple[str, dict], tuple[str, dict]]:
        info, norms = blob["translation"], blob.get("normalisation", {})
        return (info["source"], norms.get(info["source"], {})), (info["target"], norms.get(info["target"], {}))

    @classmethod
    def apply(cls, generator: nn.Module, volume: np.ndarray, blob: dict[str, Any],
              device: str | torch.device = "cpu", **settings: Any) -> np.ndarray:
        s = inference_settings(blob, **settings)
        x = as_batch(volume, 2, 2)
        out = sliding_window(x, generator, list(x.shape[2:]), 8, 0.0, torch.device(device), tta=bool(s.get("tta")),
                             transpose=x.shape[2] == x.shape[3])
        return from_batch(out, 2, 2).numpy().astype(np.float32)
