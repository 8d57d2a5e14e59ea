"""An exponential moving average of a network's weights (Polyak averaging), kept beside the network.

``average <- decay * average + (1 - decay) * weights`` after each optimizer step, for the floating-point tensors of
the state dict (weights, batch-norm statistics); other buffers (counters) are copied. With `warmup` the decay of
update n is ``min(decay, (1 + n) / (10 + n))`` (TensorFlow's ExponentialMovingAverage with num_updates), so a short
run or a fresh start is not dominated by the weights it started from. The state (``state_dict``) goes into the
model's checkpoint, so a resumed run averages exactly as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _plain(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)  # the module itself under DistributedDataParallel


class WeightAverage:
    """The running average of `net`'s state dict (same keys, on the same device)."""

    def __init__(self, net: nn.Module, decay: float, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"weight-average decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = float(decay), bool(warmup)
        self.reset(net)

    @torch.no_grad()
    def reset(self, net: nn.Module) -> None:
        """Start again from `net`'s current weights."""
        self.weights = {k: v.detach().clone() for k, v in _plain(net).state_dict().items()}
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        floats_avg, floats_new = [], []
        for k, v in _plain(net).state_dict().items():
            if v.dtype.is_floating_point and decay > 0:
                floats_avg.append(self.weights[k])
                floats_new.append(v.detach())
            else:
                self.weights[k].copy_(v)
        if floats_avg:  # average += (1 - decay) * (new - average), one fused pass
            torch._foreach_lerp_(floats_avg, floats_new, 1.0 - decay)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": {k: v.detach().to("cpu") for k, v in self.weights.items()}, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str) -> None:
        self.weights = {k: v.to(device) for k, v in state["weights"].items()}
        self.updates = int(state.get("updates", 0))
