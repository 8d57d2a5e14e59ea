"""Networks MONAI lacks (SRResNet generator, VGG-style discriminator) and differentiable interpolation."""
