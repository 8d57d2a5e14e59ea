"""The reference CycleGAN training step, re-implemented for a same-machine, same-moment timing baseline.

What junyanz/pytorch-CycleGAN-and-pix2pix does per iteration (`models/cycle_gan_model.py`,
`optimize_parameters`) with its default networks (`models/networks.py`: `ResnetGenerator` with reflection
padding, instance norm without affine, bias in every conv; `NLayerDiscriminator`, 3 layers; 'normal' init
0.02; least-squares GAN loss via MSELoss against a target tensor; Adam betas (0.5, 0.999); an image pool of
50 with Python's `random`), written from the paper and the code's structure, single channel. Benchmark use
only: `run_all.py` times it beside our `pipeline.models.cyclegan.CycleGAN` step, so machine load affects both
alike (timings taken elsewhere are not comparable on a shared machine).
"""

from __future__ import annotations

import itertools
import random

import torch
from torch import nn


class _ResnetBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def resnet_generator(ngf: int = 64, n_blocks: int = 6, nc: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(nc, ngf, 7, bias=True), nn.InstanceNorm2d(ngf),
                               nn.ReLU(True)]
    for i in range(2):
        m = 2**i
        layers += [nn.Conv2d(ngf * m, ngf * m * 2, 3, stride=2, padding=1, bias=True), nn.InstanceNorm2d(ngf * m * 2),
                   nn.ReLU(True)]
    layers += [_ResnetBlock(ngf * 4) for _ in range(n_blocks)]
    for i in range(2):
        m = 2 ** (2 - i)
        layers += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, stride=2, padding=1, output_padding=1, bias=True),
                   nn.InstanceNorm2d(ngf * m // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, nc, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def n_layer_discriminator(ndf: int = 64, n_layers: int = 3, nc: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers + 1):
        prev, mult = mult, min(2**n, 8)
        stride = 2 if n < n_layers else 1
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=True), nn.InstanceNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, True)]
    layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
    return nn.Sequential(*layers)


def _init(net: nn.Module) -> nn.Module:
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
    return net


class _Pool:
    def __init__(self, size: int = 50) -> None:
        self.size, self.images = size, []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for im in images:
            im = im.unsqueeze(0).detach()
            if len(self.images) < self.size:
                self.images.append(im)
                out.append(im)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, self.size - 1)
                old = self.images[i].clone()
                self.images[i] = im
                out.append(old)
            else:
                out.append(im)
        return torch.cat(out, 0)


class ReferenceCycleGAN:
    """`step(A, B)`: one reference iteration on images in [-1, 1] (forward, G step with D frozen, D step)."""

    def __init__(self, ngf: int = 64, ndf: int = 64, n_blocks: int = 6, lambda_identity: float = 0.5,
                 lambda_cycle: float = 10.0, lr: float = 2e-4) -> None:
        self.G_A, self.G_B = _init(resnet_generator(ngf, n_blocks)), _init(resnet_generator(ngf, n_blocks))
        self.D_A, self.D_B = _init(n_layer_discriminator(ndf)), _init(n_layer_discriminator(ndf))
        self.networks = {"G_A": self.G_A, "G_B": self.G_B, "D_A": self.D_A, "D_B": self.D_B}
        self.lambda_identity, self.lambda_cycle = lambda_identity, lambda_cycle
        self.opt_G = torch.optim.Adam(itertools.chain(self.G_A.parameters(), self.G_B.parameters()), lr=lr,
                                      betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(itertools.chain(self.D_A.parameters(), self.D_B.parameters()), lr=lr,
                                      betas=(0.5, 0.999))
        self.pool_A, self.pool_B = _Pool(), _Pool()
        self.mse, self.l1 = nn.MSELoss(), nn.L1Loss()

    def _gan(self, pred: torch.Tensor, real: bool) -> torch.Tensor:
        return self.mse(pred, torch.full_like(pred, 1.0 if real else 0.0))

    @staticmethod
    def _requires_grad(nets: list[nn.Module], flag: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad = flag

    def step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> None:
        lam, idt = self.lambda_cycle, self.lambda_identity
        fake_B = self.G_A(real_A)
        rec_A = self.G_B(fake_B)
        fake_A = self.G_B(real_B)
        rec_B = self.G_A(fake_A)
        self._requires_grad([self.D_A, self.D_B], False)
        self.opt_G.zero_grad()
        loss_idt = 0.0
        if idt > 0:
            loss_idt = (self.l1(self.G_A(real_B), real_B) + self.l1(self.G_B(real_A), real_A)) * lam * idt
        loss_G = (self._gan(self.D_A(fake_B), True) + self._gan(self.D_B(fake_A), True)
                  + self.l1(rec_A, real_A) * lam + self.l1(rec_B, real_B) * lam + loss_idt)
        loss_G.backward()
        self.opt_G.step()
        self._requires_grad([self.D_A, self.D_B], True)
        self.opt_D.zero_grad()
        for net, real, fake in ((self.D_A, real_B, self.pool_B.query(fake_B)), (self.D_B, real_A, self.pool_A.query(fake_A))):
            loss_D = (self._gan(net(real), True) + self._gan(net(fake.detach()), False)) * 0.5
            loss_D.backward()
        self.opt_D.step()
