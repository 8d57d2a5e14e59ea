"""The contract every GAN model fulfils, and the mixed-precision helper the models use.

The one training loop (`pipeline.gan.loop.train`) knows nothing about a model beyond this contract:

* ``set_input(batch)`` - take one batch (a dict of tensors from the model's sampler);
* ``optimize_step(step)`` - one iteration: the generator step with the discriminator(s) frozen, then the
  discriminator step with the generator frozen (and its output detached);
* ``losses()`` - the last step's loss terms as floats (``loss_tensors()``: as detached tensors on the device,
  which is what the loop reads, without waiting for the device); ``visuals()`` - a few tensors to look at;
* ``networks`` / ``optimizers`` / ``schedulers`` - dicts by name; ``state_dict()`` / ``load_state_dict()``
  cover all of them (the loop adds the step, RNG states, grad scaler and config);
* ``total_steps`` - how many iterations the configuration asks for;
* ``prepare_data(cfg, data_dir, seed)`` (classmethod) - the sampler and what the constructor needs from the data;
* ``export(out_dir)`` - write the model file(s) inference needs, at the end of training.

All randomness inside a step should come from torch's global RNG (restored on resume) or be a function of
the step; schedulers are stepped once per iteration by the loop, so their factor is a function of the step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check: AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class Precision:
    """Autocast + optional GradScaler for one device.

    ``auto``: bf16 autocast on CUDA devices that support it, else fp16 with a GradScaler; on a CPU with native
    bf16 arithmetic (AVX-512 BF16 or AMX; `cpu_has_bf16`) bf16 autocast too, with 2D tensors channels-last
    (`channels_last`): oneDNN's bf16 convolutions make the demo's CycleGAN step 2.1x faster than fp32 on an
    AVX-512 BF16 CPU. Other CPUs run fp32 (emulated bf16 is slower), as does ``fp32`` everywhere.
    """

    def __init__(self, device: torch.device, mode: str = "auto") -> None:
        if mode not in PRECISIONS:
            raise ValueError(f"unknown precision {mode!r}; choose one of {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if mode == "auto":
            mode = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "bf16"
        if not cuda and not (mode == "bf16" and cpu_has_bf16()):
            mode = "fp32"  # fp16 autocast on a CPU, or bf16 without native support: slower than fp32
        self.mode = mode
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        self.scaler = torch.amp.GradScaler("cuda") if mode == "fp16" else None

    def channels_last(self, spatial_dims: int) -> bool:
        """Whether 2D networks and batches should be channels-last: on CUDA, and for bf16 on the CPU."""
        return spatial_dims == 2 and (self.device.type == "cuda" or self.mode == "bf16")

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context for forward passes (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        """Once per iteration, after every optimizer has stepped."""
        if self.scaler:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "scaler": self.scaler.state_dict() if self.scaler else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def adam(params: Any, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam with PyTorch's fused kernel (one pass over all parameters; CPU and CUDA), else the default one.

    Same update rule; on the CPU reference CycleGAN step the fused kernel takes the optimizer steps from about
    55 to 20 ms.
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, ValueError):  # parameters on a device without a fused kernel
        return torch.optim.Adam(params, lr=lr, betas=betas)


class GANModel:
    """Base class: holds the networks, optimizers and schedulers by name and (de)serialises them."""

    name: ClassVar[str] = "gan"
    #: the typed config section of the family (a `pipeline.config.Section`)
    config_class: ClassVar[type] = object
    #: every loss name `losses()` may report (fixes the columns of history.csv)
    loss_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, device: torch.device, precision: Precision) -> None:
        self.device = torch.device(device)
        self.precision = precision
        self.networks: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self._losses: dict[str, torch.Tensor] = {}

    # -- the contract ---------------------------------------------------------------------------------
    @classmethod
    def prepare_data(cls, cfg: Any, data_dir: str | Path, seed: int) -> tuple[Any, dict[str, Any]]:
        """Return ``(sampler, kwargs)``: the training sampler (``sampler(step) -> batch``, a pure function of
        (seed, step)) and the keyword arguments the constructor needs from the data (e.g. scale factors)."""
        raise NotImplementedError

    @property
    def total_steps(self) -> int:
        raise NotImplementedError

    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def optimize_step(self, step: int) -> None:
        raise NotImplementedError

    def losses(self) -> dict[str, float]:
        """The loss terms of the last step (only the active ones)."""
        return {k: float(v.detach()) for k, v in self._losses.items()}

    def loss_tensors(self) -> dict[str, torch.Tensor]:
        """The loss terms of the last step as detached scalar tensors on the device (no host synchronisation)."""
        return {k: v.detach() for k, v in self._losses.items()}

    def visuals(self) -> dict[str, torch.Tensor]:
        return {}

    #: steps (counted as steps done) at which the loop also checkpoints and calls `validation_step`, e.g. the end
    #: of a training phase
    milestones: tuple[int, ...] = ()

    def validation_step(self, step: int) -> int | None:
        """Called by the loop at every checkpoint step (`step` steps done), before the checkpoint is written:
        model selection on validation data. Return None to go on, or a later step to continue from (a phase
        ended early because validation stopped improving; the schedules are advanced to it). Any state it keeps
        belongs in `extra_state` so a resumed run selects exactly as an uninterrupted one."""
        return None

    def export(self, out_dir: Path) -> list[Path]:
        """Write the model file(s) for inference into `out_dir`; return their paths."""
        raise NotImplementedError

    def lrs(self) -> dict[str, float]:
        """Current learning rate of each optimizer (first parameter group)."""
        return {name: float(opt.param_groups[0]["lr"]) for name, opt in self.optimizers.items()}

    # -- helpers --------------------------------------------------------------------------------------
    def train_mode(self, flag: bool = True) -> None:
        for net in self.networks.values():
            net.train(flag)

    @contextlib.contextmanager
    def frozen(self, *names: str) -> Iterator[None]:
        """Freeze the named networks (requires_grad False) for the duration of the block.

        Under DDP (`pipeline.gan.distributed`) a frozen network is also in its ``no_sync()``: its parameters get
        no gradients in this block, so its gradient reducer must not wait for any.
        """
        from torch.nn.parallel import DistributedDataParallel

        from pipeline.gan.losses import set_requires_grad

        nets = [self.networks[n] for n in names]
        set_requires_grad(nets, False)
        try:
            with contextlib.ExitStack() as stack:
                for net in nets:
                    if isinstance(net, DistributedDataParallel):
                        stack.enter_context(net.no_sync())
                yield
        finally:
            set_requires_grad(nets, True)

    def supervised_gan_step(self, content: torch.Tensor, fake: torch.Tensor, real: torch.Tensor,
                            critic: Callable[[torch.Tensor], torch.Tensor], lambda_adv: float, gan_loss: str,
                            losses: dict[str, torch.Tensor]) -> None:
        """The optimizer steps of a generator ``G`` trained on a supervised loss, with an optional critic ``D``.

        G's step minimises `content` (the weighted pixel losses of its output `fake`, graph attached) plus
        `lambda_adv` times J_G of ``critic(fake)``, D frozen; then, when `lambda_adv` > 0, D's step minimises J_D of
        ``critic(real)`` against ``critic(fake.detach())``, G frozen. ``G_adv``, ``G``, ``D``, ``d_real`` and
        ``d_fake`` are added to `losses`. (pix2pix, inpainting and motion correction share it.)
        """
        from pipeline.gan.losses import d_loss, g_loss

        amp = self.precision
        opt_g = self.optimizers["G"]
        opt_g.zero_grad(set_to_none=True)
        with self.frozen("D"):
            total = content
            if lambda_adv > 0:
                with amp.autocast():
                    logits = critic(fake)
                losses["G_adv"] = g_loss(logits, gan_loss)
                total = total + lambda_adv * losses["G_adv"]
            losses["G"] = total
            amp.backward(total)
            amp.step(opt_g)
        if lambda_adv > 0:
            opt_d = self.optimizers["D"]
            opt_d.zero_grad(set_to_none=True)
            with self.frozen("G"):
                with amp.autocast():
                    real_logits = critic(real)
                    fake_logits = critic(fake.detach())
                losses["D"] = 0.5 * d_loss(real_logits, fake_logits, gan_loss)
                amp.backward(losses["D"])
                amp.step(opt_d)
            losses["d_real"] = real_logits.float().mean()
            losses["d_fake"] = fake_logits.float().mean()

    def state_dict(self) -> dict[str, Any]:
        return {
            "networks": {k: v.state_dict() for k, v in self.networks.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for group in ("networks", "optimizers", "schedulers"):
            mine: dict[str, Any] = getattr(self, group)
            theirs = state[group]
            if set(mine) != set(theirs):
                raise ValueError(f"checkpoint {group} {sorted(theirs)} do not match the model's {sorted(mine)}")
            for k, obj in mine.items():
                obj.load_state_dict(theirs[k])
        self.load_extra_state(state.get("extra", {}))

    def extra_state(self) -> dict[str, Any]:
        """Model-specific state beyond networks/optimizers/schedulers (safe-to-load data only)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass
