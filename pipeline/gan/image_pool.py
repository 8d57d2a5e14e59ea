"""A history of generated images for the discriminator (Shrivastava et al. 2017; CycleGAN's ImagePool).

Until the pool holds `size` images every fake is stored and returned unchanged. Once full, each fake is, with
probability 0.5, swapped for a randomly chosen stored one (which the new fake replaces), otherwise returned as
is. Fakes of each size (a resolution curriculum trains on crops of two grids) have their own history: past
fakes of another grid cannot be mixed into the batch. The pool draws from its own seeded `torch.Generator`, and
`state_dict()` holds both the images and that generator's state, so a resumed run continues exactly.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """Buffers of up to `size` past fakes, one per image size; `size` 0 disables it (`query` returns its input)."""

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        if size < 0:
            raise ValueError(f"image pool size must be >= 0, got {size}")
        self.size = size
        self.buffers: dict[tuple[int, ...], list[torch.Tensor]] = {}
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch like `images` (N, C, ...), mixing in stored fakes once the pool is full."""
        if self.size == 0:
            return images
        buffer = self.buffers.setdefault(tuple(images.shape[1:]), [])
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(buffer) < self.size:
                buffer.append(image.clone())
                out.append(image)
                continue
            swap = torch.rand((), generator=self.generator).item() < 0.5
            if swap:
                idx = int(torch.randint(len(buffer), (), generator=self.generator).item())
                stored = buffer[idx].to(image.device)
                buffer[idx] = image.clone()
                out.append(stored)
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        """Images (on CPU) and the generator state."""
        return {
            "size": self.size,
            "images": [im.cpu() for b in self.buffers.values() for im in b],
            "rng": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["size"]) != self.size:
            raise ValueError(f"image pool size mismatch: checkpoint {state['size']}, config {self.size}")
        self.buffers = {}
        for im in state["images"]:
            self.buffers.setdefault(tuple(im.shape[1:]), []).append(im.clone())
        self.generator.set_state(state["rng"])

    def to(self, device: torch.device | str) -> ImagePool:
        """Move the stored images (the generator stays on CPU)."""
        self.buffers = {k: [im.to(device) for im in b] for k, b in self.buffers.items()}
        return self
