"""GAN foundations shared by every model: losses, the model contract, the one training loop, checkpoints."""
