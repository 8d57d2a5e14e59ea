"""Training steps of the reference implementations themselves, loaded from a local copy of their source.

`run_all.py --reference-dir PATH` times these interleaved, step by step, with our own steps. Their code is not
part of this repository (licences, and it would no longer be "theirs"); PATH holds an unmodified copy:

``PATH/pytorch-CycleGAN-and-pix2pix/``  https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix (BSD):
    ``models/networks.py``, ``models/cycle_gan_model.py``, ``util/image_pool.py``. Its ``CycleGANModel`` runs as
    is (``optimize_parameters``: forward, G step with both D frozen, D step with the image pools); this module
    supplies only what its training script would: the options (resnet_6blocks, ngf/ndf 64, 'basic' 3-layer
    PatchGAN, instance norm, 'normal' init 0.02, lsgan, pool 50, Adam 2e-4 / beta1 0.5, lambda_A = lambda_B = 10)
    and a minimal ``BaseModel`` (``models/base_model.py`` is not loaded: it needs the data and option modules).
    Where ``cycle_gan_model.py`` is newer than ``networks.py`` (it passes ``init_gain`` to ``define_G/define_D``,
    and ``gan_mode`` to ``GANLoss``), calls are forwarded to the older signatures (same networks, same 0.02
    init, MSE GAN loss).
``PATH/BasicSR/`` (or ``PATH/basicsr-*/``)  XPixelGroup/BasicSR (Apache-2.0; e.g. the PyPI sdist
    ``pip download basicsr==1.4.2 --no-deps --no-binary :all:``, unpacked): ``basicsr/archs/srresnet_arch.py``
    (``MSRResNet``), ``basicsr/archs/discriminator_arch.py`` (``VGGStyleDiscriminator``), ``arch_util.py``,
    ``basicsr/losses/{gan_loss,basic_loss,loss_util}.py``. Loaded without BasicSR's package ``__init__`` (it
    needs torchvision, OpenCV, ...): its registry decorators, logger, the deformable-conv ops and (when missing)
    torchvision are stubbed in ``sys.modules`` for the import only. The step is ``SRGANModel.optimize_parameters``
    of ``basicsr/models/srgan_model.py`` (G: pixel L1 x 1e-2 + vanilla GAN x 5e-3, D frozen; D: real, then
    fake, G output detached; Adam 1e-4, betas (0.9, 0.99): BasicSR's SRGAN x4 options), without the VGG19
    perceptual loss (pretrained weights; our SRGAN has none either), 1 channel.

Nothing here changes their arithmetic: the reference networks run in fp32 with PyTorch's default (contiguous)
memory format, as their code does.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import itertools
import logging
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

CYCLEGAN_DIR = "pytorch-CycleGAN-and-pix2pix"


class ReferenceMissing(FileNotFoundError):
    """The reference source is not under --reference-dir."""


@contextlib.contextmanager
def _temporary_modules(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    """Put `modules` into sys.modules for an import, then remove them and whatever was imported under them."""
    saved = {name: sys.modules.get(name) for name in modules}
    before = set(sys.modules)
    sys.modules.update(modules)
    try:
        yield
    finally:
        roots = {name.split(".")[0] for name in modules}
        for name in set(sys.modules) - before:
            if name.split(".")[0] in roots:
                del sys.modules[name]
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def _package(name: str, path: Path | None = None, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)] if path is not None else []  # a package: submodules import from `path`
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


# ------------------------------------------------------------------------------------------ CycleGAN (junyanz)
class _BaseModel:
    """What ``CycleGANModel`` uses of the reference's ``BaseModel`` (its ``__init__`` and ``set_requires_grad``)."""

    def __init__(self, opt: Any) -> None:
        self.opt, self.gpu_ids, self.isTrain = opt, opt.gpu_ids, opt.isTrain
        self.device = torch.device("cpu")
        self.loss_names, self.model_names, self.visual_names, self.optimizers, self.image_paths = [], [], [], [], []

    def set_requires_grad(self, nets: Any, requires_grad: bool = False) -> None:
        for net in nets if isinstance(nets, list) else [nets]:
            if net is not None:
                for param in net.parameters():
                    param.requires_grad = requires_grad


def load_cyclegan(reference_dir: Path) -> tuple[Any, Any]:
    """(the reference's ``models.cycle_gan_model`` module, its ``models.networks`` module)."""
    root = Path(reference_dir) / CYCLEGAN_DIR
    needed = [root / "models" / "networks.py", root / "models" / "cycle_gan_model.py", root / "util" / "image_pool.py"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise ReferenceMissing(f"CycleGAN reference source missing: {', '.join(missing)}")
    base = _package("models.base_model", BaseModel=_BaseModel)
    with _temporary_modules({"models": _package("models", root / "models"), "models.base_model": base,
                             "util": _package("util", root / "util")}):
        networks = importlib.import_module("models.networks")
        _forward_new_signatures(networks)
        cycle_gan_model = importlib.import_module("models.cycle_gan_model")
    return cycle_gan_model, networks


def _forward_new_signatures(networks: Any) -> None:
    """Let a ``cycle_gan_model.py`` newer than ``networks.py`` call it (``init_gain`` argument; only 0.02 = the
    older code's fixed gain)."""
    import inspect

    if "init_gain" in inspect.signature(networks.define_G).parameters:
        return  # networks.py of the same generation
    define_g, define_d = networks.define_G, networks.define_D

    def define_G(input_nc, output_nc, ngf, netG, norm="batch", use_dropout=False, init_type="normal",  # noqa: N802
                 init_gain=0.02, gpu_ids=()):
        assert init_gain == 0.02, "the older networks.py initialises with gain 0.02 only"
        return define_g(input_nc, output_nc, ngf, netG, norm, use_dropout, init_type, list(gpu_ids))

    def define_D(input_nc, ndf, netD, n_layers_D=3, norm="batch", init_type="normal", init_gain=0.02,  # noqa: N802
                 gpu_ids=()):
        assert init_gain == 0.02, "the older networks.py initialises with gain 0.02 only"
        return define_d(input_nc, ndf, netD, n_layers_D, norm, False, init_type, list(gpu_ids))

    networks.define_G, networks.define_D = define_G, define_D


def cyclegan_step(reference_dir: Path, lambda_identity: float = 0.5, size: int = 128, ngf: int = 64,
                  n_blocks: int = 6, seed: int = 0, track_running_stats: bool | None = None
                  ) -> tuple[Callable[[], None], dict[str, Any]]:
    """One reference CycleGAN iteration (``optimize_parameters``) on a fixed 1-channel pair in [-1, 1].

    `track_running_stats`: None runs the instance norm as the given ``networks.py`` defines it; True/False
    overrides it (the repository's 2018 ``networks.py`` has True, later versions False: running statistics
    updated in training but unused there).
    """
    cycle_gan_model, networks = load_cyclegan(reference_dir)
    if track_running_stats is not None:
        import functools

        get_norm_layer = networks.get_norm_layer

        def patched(norm_type: str = "instance") -> Any:
            layer = get_norm_layer(norm_type)
            if norm_type == "instance":
                layer = functools.partial(layer.func, **{**layer.keywords, "track_running_stats": track_running_stats})
            return layer

        networks.get_norm_layer = patched
    opt = types.SimpleNamespace(
        input_nc=1, output_nc=1, ngf=ngf, ndf=64, netG=f"resnet_{n_blocks}blocks", netD="basic", n_layers_D=3,
        norm="instance", no_dropout=True, init_type="normal", init_gain=0.02, gpu_ids=[], isTrain=True,
        lambda_identity=lambda_identity, lambda_A=10.0, lambda_B=10.0, pool_size=50, gan_mode="lsgan", lr=2e-4,
        beta1=0.5, direction="AtoB")
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # "initialize network with normal"
        model = cycle_gan_model.CycleGANModel(opt)
    gen = torch.Generator().manual_seed(seed)
    data = {"A": torch.rand(1, 1, size, size, generator=gen) * 2 - 1,
            "B": torch.rand(1, 1, size, size, generator=gen) * 2 - 1, "A_paths": [], "B_paths": []}
    nets = [model.netG_A, model.netG_B, model.netD_A, model.netD_B]

    def step() -> None:
        model.set_input(data)
        model.optimize_parameters()

    norm = networks.get_norm_layer("instance")
    desc = {"params": sum(p.numel() for n in nets for p in n.parameters()), "precision": "fp32",
            "config": (f"junyanz CycleGANModel: resnet_{n_blocks}blocks, ngf {ngf}, ndf 64, {size}x{size}, batch 1, "
                       f"identity {lambda_identity}, InstanceNorm2d{dict(norm.keywords)}")}
    return step, desc


# ------------------------------------------------------------------------------------------ SRGAN (BasicSR)
def basicsr_root(reference_dir: Path) -> Path:
    candidates = [Path(reference_dir) / "BasicSR", *sorted(Path(reference_dir).glob("basicsr-*"))]
    for root in candidates:
        if (root / "basicsr" / "archs" / "srresnet_arch.py").is_file():
            return root
    raise ReferenceMissing(f"BasicSR source missing: none of {', '.join(map(str, candidates))} has "
                           "basicsr/archs/srresnet_arch.py")


class _Registry:
    def register(self, obj: Any = None, suffix: str | None = None) -> Any:
        return obj if obj is not None else (lambda o: o)


def load_basicsr(reference_dir: Path) -> dict[str, Any]:
    """BasicSR's ``MSRResNet``, ``VGGStyleDiscriminator``, ``GANLoss``, ``L1Loss`` (and its version)."""
    root = basicsr_root(reference_dir)
    pkg = root / "basicsr"
    dcn = types.ModuleType("basicsr.ops.dcn")
    dcn.ModulatedDeformConvPack, dcn.modulated_deform_conv = nn.Module, None
    vgg = types.ModuleType("basicsr.archs.vgg_arch")
    vgg.VGGFeatureExtractor = None  # the perceptual loss (not used)
    registry = types.ModuleType("basicsr.utils.registry")
    registry.ARCH_REGISTRY = registry.LOSS_REGISTRY = registry.MODEL_REGISTRY = _Registry()
    stubs = {"basicsr": _package("basicsr", pkg), "basicsr.archs": _package("basicsr.archs", pkg / "archs"),
             "basicsr.losses": _package("basicsr.losses", pkg / "losses"), "basicsr.ops": _package("basicsr.ops"),
             "basicsr.ops.dcn": dcn, "basicsr.archs.vgg_arch": vgg, "basicsr.utils.registry": registry,
             "basicsr.utils": _package("basicsr.utils", get_root_logger=lambda *a, **k: logging.getLogger("basicsr"))}
    if importlib.util.find_spec("torchvision") is None:
        stubs["torchvision"] = types.ModuleType("torchvision")  # arch_util imports it for deformable convs only
    with _temporary_modules(stubs):
        srresnet = importlib.import_module("basicsr.archs.srresnet_arch")
        disc = importlib.import_module("basicsr.archs.discriminator_arch")
        gan_loss = importlib.import_module("basicsr.losses.gan_loss")
        basic_loss = importlib.import_module("basicsr.losses.basic_loss")
    version = "?"
    with contextlib.suppress(OSError):
        for line in (pkg / "version.py").read_text().splitlines():
            if line.startswith("__version__"):
                version = line.split("=", 1)[1].strip().strip("'\"")
    return {"MSRResNet": srresnet.MSRResNet, "VGGStyleDiscriminator": disc.VGGStyleDiscriminator,
            "GANLoss": gan_loss.GANLoss, "L1Loss": basic_loss.L1Loss, "version": version}


def srgan_step(reference_dir: Path, gt_size: int = 128, batch: int = 16, scale: int = 4, seed: int = 0
               ) -> tuple[Callable[[], None], dict[str, Any]]:
    """One BasicSR SRGAN iteration (``SRGANModel.optimize_parameters`` without the perceptual loss), 1 channel."""
    ref = load_basicsr(reference_dir)
    torch.manual_seed(seed)
    net_g = ref["MSRResNet"](num_in_ch=1, num_out_ch=1, num_feat=64, num_block=16, upscale=scale)
    net_d = ref["VGGStyleDiscriminator"](num_in_ch=1, num_feat=64, input_size=gt_size)
    net_g.train()
    net_d.train()
    cri_pix = ref["L1Loss"](loss_weight=1e-2, reduction="mean")
    cri_gan = ref["GANLoss"]("vanilla", real_label_val=1.0, fake_label_val=0.0, loss_weight=5e-3)
    opt_g = torch.optim.Adam(net_g.parameters(), lr=1e-4, weight_decay=0, betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(net_d.parameters(), lr=1e-4, weight_decay=0, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch, 1, gt_size // scale, gt_size // scale, generator=gen)
    gt = torch.rand(batch, 1, gt_size, gt_size, generator=gen)

    def step() -> None:  # srgan_model.py's optimize_parameters (net_d_iters 1, net_d_init_iters 0, no EMA)
        for p in net_d.parameters():
            p.requires_grad = False
        opt_g.zero_grad()
        output = net_g(lq)
        l_g_total = 0
        l_g_total += cri_pix(output, gt)
        l_g_total += cri_gan(net_d(output), True, is_disc=False)
        l_g_total.backward()
        opt_g.step()
        for p in net_d.parameters():
            p.requires_grad = True
        opt_d.zero_grad()
        real_d_pred = net_d(gt)
        l_d_real = cri_gan(real_d_pred, True, is_disc=True)
        torch.mean(real_d_pred.detach())
        l_d_real.backward()
        fake_d_pred = net_d(output.detach())
        l_d_fake = cri_gan(fake_d_pred, False, is_disc=True)
        torch.mean(fake_d_pred.detach())
        l_d_fake.backward()
        opt_d.step()

    desc = {"params": sum(p.numel() for n in (net_g, net_d) for p in itertools.chain(n.parameters())),
            "precision": "fp32",
            "config": (f"BasicSR {ref['version']} MSRResNet (16 blocks, 64 ch, x{scale}) + VGGStyleDiscriminator "
                       f"(64 ch, {gt_size}); batch {batch}, {gt_size // scale}->{gt_size}; L1 + vanilla GAN")}
    return step, desc
