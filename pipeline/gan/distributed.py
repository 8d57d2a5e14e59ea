"""Data-parallel training with PyTorch `DistributedDataParallel` (DDP), as launched by `torchrun`.

``torchrun --nproc_per_node=N -m pipeline train ...`` starts N processes and sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` in their environment; `setup` reads them, binds each process to ``cuda:LOCAL_RANK`` (or the CPU)
and joins the process group (NCCL on CUDA, Gloo on the CPU). Without torchrun, or with one process, nothing is
initialised and training is exactly the single-process training.

What DDP needs in a GAN step, and how the loop provides it:

* every network is wrapped in `DistributedDataParallel` (`wrap_networks`), so its gradients are averaged
  across the ranks in ``backward()``; the models call the wrapped networks as before;
* batch norm becomes `torch.nn.SyncBatchNorm` on CUDA: batch statistics over the global batch, running
  statistics equal on every rank, so buffers are not broadcast (``broadcast_buffers=False``, in torch >= 2.13
  ``forward_sync_buffers=False``); broadcasting them in place before each forward breaks the discriminator's
  two forwards (real, fake) before one backward on CUDA (pytorch/pytorch#22095, #175024). PyTorch has no CPU
  SyncBatchNorm: on the CPU each rank normalises with its own shard's batch statistics and rank 0's buffers
  are broadcast before the forwards (the default), so the running statistics rank 0 saves are the run's;
* a frozen network (`GANModel.frozen`: the discriminator in the generator step) is called inside its
  ``no_sync()``: its parameters get no gradients, so its reducer must not expect any;
* every parameter takes part in each backward of its network, so ``find_unused_parameters`` stays off;
* state dicts are the wrapped modules' (`StateDictDDP`), with the same keys as in a single process.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)

# torch >= 2.13 renamed DDP's `broadcast_buffers` (buffers broadcast from rank 0 before each forward)
_SYNC_BUFFERS = ("forward_sync_buffers" if "forward_sync_buffers" in
                 inspect.signature(DistributedDataParallel.__init__).parameters else "broadcast_buffers")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the data-parallel job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """True when more than one process trains (DDP is in use)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, history, logs and the model files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def env_info() -> DistInfo:
    """The rank, local rank and world size torchrun put in the environment (1 process without torchrun)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, LOCAL_RANK={local}, WORLD_SIZE={world}")
    return DistInfo(rank, local, world)


def info() -> DistInfo:
    """This process's place in the initialised process group (world size 1 when there is none)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return DistInfo(dist.get_rank(), _env_int("LOCAL_RANK", dist.get_rank()), dist.get_world_size())
    return DistInfo()


def resolve_device(name: str, where: DistInfo) -> torch.device:
    """``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda`` or ``cuda:K``; under DDP CUDA is ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type != "cuda" or not where.enabled:
        return device
    if device.index is not None and device.index != where.local_rank:
        raise ValueError(f"--device {name}: under torchrun each process uses cuda:LOCAL_RANK "
                         f"(here cuda:{where.local_rank}); pass --device cuda or auto")
    if where.local_rank >= torch.cuda.device_count():
        raise RuntimeError(f"LOCAL_RANK {where.local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
                           "visible; start at most that many processes per node")
    return torch.device("cuda", where.local_rank)


def setup(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Read the torchrun environment, pick this process's device and join the process group (world size > 1).

    Returns ``(info, device)``. NCCL on CUDA, Gloo on the CPU. Idempotent.
    """
    where = env_info()
    device = resolve_device(device_name, where)
    if where.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            eager = "device_id" in inspect.signature(dist.init_process_group).parameters
            dist.init_process_group("nccl", **({"device_id": device} if eager else {}))
        else:
            dist.init_process_group("gloo")
        if dist.get_world_size() != where.world_size or dist.get_rank() != where.rank:
            raise RuntimeError("the process group disagrees with RANK/WORLD_SIZE of the environment")
        log.debug("rank %d/%d joined the process group (%s) on %s", where.rank, where.world_size,
                  dist.get_backend(), device)
    return where, device


def teardown() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if info().enabled:
        dist.barrier()


class StateDictDDP(DistributedDataParallel):
    """`DistributedDataParallel` whose ``state_dict``/``load_state_dict`` are the wrapped module's.

    Checkpoints and model files so keep the keys of the plain network (no ``module.`` prefix), and code that
    saves ``model.networks[name].state_dict()`` works unchanged under DDP.
    """

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


def unwrap(net: nn.Module) -> nn.Module:
    """The plain network inside a DDP wrapper (the network itself when not wrapped)."""
    return net.module if isinstance(net, DistributedDataParallel) else net


@contextlib.contextmanager
def wrap_networks(networks: dict[str, nn.Module], device: torch.device) -> Iterator[dict[str, nn.Module]]:
    """Wrap each network of `networks` (in place) in DDP for the duration of the block; put the plain ones back after.

    On CUDA batch norm layers become `SyncBatchNorm` (they stay so after the block; in eval mode, or without a
    process group, SyncBatchNorm computes what BatchNorm does, with the same state-dict keys). Optimizers keep
    working: neither the wrapper nor the conversion replaces a parameter. A no-op with world size 1.
    """
    if not info().enabled:
        yield networks
        return
    plain = dict(networks)
    try:
        for name, net in plain.items():
            synced = False
            if device.type == "cuda":
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
                synced = any(isinstance(m, nn.SyncBatchNorm) for m in net.modules())
                plain[name] = net
            networks[name] = StateDictDDP(net, device_ids=[device.index] if device.type == "cuda" else None,
                                          **{_SYNC_BUFFERS: not synced})
        yield networks
    finally:
        networks.update(plain)


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce `tensor` in place across the ranks (``sum``, ``min`` or ``max``); a no-op in one process."""
    if info().enabled:
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN,
                                    "max": dist.ReduceOp.MAX}[op])
    return tensor


def check_in_sync(networks: dict[str, nn.Module]) -> None:
    """Raise if a network's parameters differ between the ranks (a no-op in one process).

    Under DDP they are bitwise equal by construction (same start, averaged gradients, same optimizer step); a
    difference means a model called a network other than through ``model.networks`` (so DDP did not average
    its gradients). Compares one checksum per network: cheap, run at checkpoints.
    """
    if not info().enabled or not networks:
        return
    sums = torch.stack([torch.stack([p.detach().double().sum() for p in net.parameters()]).sum()
                        for net in networks.values()])
    high, low = all_reduce(sums.clone(), "max"), all_reduce(sums.clone(), "min")
    same = ((high == low) | (high.isnan() & low.isnan())).tolist()
    apart = [name for name, ok in zip(networks, same, strict=True) if not ok]
    if apart:
        raise RuntimeError(f"the parameters of {', '.join(apart)} differ between the DDP ranks: the model must call "
                           "its networks through model.networks (the DDP wrappers) so that gradients are averaged")


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's `obj` (tensors moved to the CPU), as a list by rank on rank 0; None on the other ranks."""
    where = info()
    obj = _to_cpu(obj)
    if not where.enabled:
        return [obj]
    out: list[Any] | None = [None] * where.world_size if where.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out
