"""The models: a plain dict from name to class. Adding one = a module + an entry here + a config section."""

from __future__ import annotations

from typing import Any

from pipeline.gan.base import GANModel
from pipeline.models.cyclegan import CycleGAN
from pipeline.models.srgan import SRGAN

MODELS: dict[str, type[GANModel]] = {"srgan": SRGAN, "cyclegan": CycleGAN}


def build_model(name: str, cfg: Any, **kwargs: Any) -> GANModel:
    """Instantiate the model `name` with its config section `cfg` (and model-specific keyword arguments)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[name](cfg, **kwargs)

# The family registry (the model-contract work renames MODELS to this): name -> GANModel subclass, whose
# `config_class` is the family's typed config section.
FAMILIES = MODELS
