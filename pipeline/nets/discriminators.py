"""Discriminators returning ``[features..., logits]`` like MONAI's `PatchDiscriminator` (for feature matching)."""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn


class VGGStyleDiscriminator(nn.Module):
    """The SRGAN paper's discriminator (Ledig et al. 2017, Fig. 4), 2D or 3D, for inputs of any size.

    conv3 (c) LReLU; then per level conv3 stride 1 and conv3 stride 2, each + BN + LReLU, widths c, 2c, 4c, 8c;
    then global average pooling (instead of flattening, so any input size works), "dense" 1x1 convolutions
    (16c, LReLU, 1). Returns the output of every level and finally the logits, shape (N, 1).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, channels: int = 64, levels: int = 4) -> None:
        super().__init__()
        conv, bn = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        act = nn.LeakyReLU(0.2, inplace=True)
        blocks: list[nn.Module] = [nn.Sequential(conv(in_channels, channels, 3, padding=1), act)]
        cin = channels
        for lvl in range(levels):
            cout = channels * 2**lvl
            layers: list[nn.Module] = []
            if lvl > 0:
                layers += [conv(cin, cout, 3, stride=1, padding=1, bias=False), bn(cout), nn.LeakyReLU(0.2, True)]
            layers += [conv(cout, cout, 3, stride=2, padding=1, bias=False), bn(cout), nn.LeakyReLU(0.2, True)]
            blocks.append(nn.Sequential(*layers))
            cin = cout
        hidden = channels * 16
        blocks.append(
            nn.Sequential(
                Pool[Pool.ADAPTIVEAVG, spatial_dims](1),
                conv(cin, hidden, 1),
                nn.LeakyReLU(0.2, True),
                conv(hidden, 1, 1),
                nn.Flatten(),
            )
        )
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out


def patch_discriminator(spatial_dims: int, channels: int, layers: int, norm: str = "BATCH", bias: bool = False,
                        in_channels: int = 1) -> nn.Module:
    """MONAI's PatchGAN `PatchDiscriminator` (one output channel), with the faster single-output last conv."""
    from monai.networks.nets import PatchDiscriminator

    from pipeline.nets.fastconv import use_single_output_convs

    return use_single_output_convs(PatchDiscriminator(spatial_dims=spatial_dims, channels=channels,
                                                      in_channels=in_channels, out_channels=1, num_layers_d=layers,
                                                      norm=norm, bias=bias))


class ClassifyingDiscriminator(nn.Module):
    """A PatchGAN with an auxiliary contrast classifier on its last features (1x1 convolution, averaged over the
    patches). With `per_contrast` it has one real/fake map per contrast and judges an image on its contrast's
    (StarGAN v2's multi-task discriminator). ``forward(x, contrast) -> (patch logits, (N, n_classes) logits)``;
    `contrast` (N,) gives one map per image, (N, K) K maps per image from one pass (logits (N, K, ...))."""

    def __init__(self, body: nn.Module, features: int, n_classes: int, spatial_dims: int, per_contrast: bool) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        if per_contrast:  # MONAI's last layer (kernel 4, padding 1), with a map per contrast
            body.final_conv = conv(features, n_classes, 4, padding=1)
        self.body, self.per_contrast = body, per_contrast
        self.classifier = conv(features, n_classes, 1)

    def forward(self, x: torch.Tensor, contrast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        *_, features, logits = self.body(x)
        if self.per_contrast:
            codes = contrast.long().view(contrast.shape[0], -1)
            index = codes.view(*codes.shape, *([1] * (logits.dim() - 2))).expand(-1, -1, *logits.shape[2:])
            logits = logits.gather(1, index)
        return logits, self.classifier(features).flatten(2).mean(2)
