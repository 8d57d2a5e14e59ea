"""Medical imaging GAN pipeline: SRGAN super-resolution and CycleGAN modality translation."""

__version__ = "0.1.0"
