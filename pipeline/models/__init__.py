"""The GAN families: a plain dict from name to family class (`pipeline.models.contract.Family`).

Adding a family = one module under `pipeline/models/`, one entry here, one config block (see
docs/adding-a-model.md). `config.models` lists the families a run trains.
"""

from __future__ import annotations

from typing import Any

from pipeline.models.contract import Family
from pipeline.models.cyclegan import CycleGAN
from pipeline.models.dcgan import DCGAN
from pipeline.models.inpaint import Inpaint
from pipeline.models.motion import MotionCorrection
from pipeline.models.pix2pix import Pix2Pix
from pipeline.models.selfsr import SelfSR
from pipeline.models.srgan import SRGAN
from pipeline.models.stargan import StarGAN

FAMILIES: dict[str, type[Family]] = {"srgan": SRGAN, "cyclegan": CycleGAN, "pix2pix": Pix2Pix, "stargan": StarGAN, "dcgan": DCGAN, "motion": MotionCorrection, "inpaint": Inpaint, "selfsr": SelfSR}


def family(name: str) -> type[Family]:
    """The family class called `name`."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; choose one of: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def build_model(name: str, cfg: Any, **kwargs: Any) -> Family:
    """Instantiate the family `name` with its config section `cfg` (and family-specific keyword arguments)."""
    return family(name)(cfg, **kwargs)


def family_of(blob: dict[str, Any]) -> type[Family]:
    """The family that wrote a model file (files written before "family" was recorded: by their task)."""
    name = blob.get("family") or {cls.file_task: n for n, cls in FAMILIES.items()}.get(blob.get("task", ""))
    if name is None:
        raise ValueError(f"model file of task {blob.get('task')!r} names no family this pipeline knows "
                         f"({', '.join(FAMILIES)})")
    return family(name)
