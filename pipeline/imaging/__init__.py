"""Image operations shared by the stages: geometry, intensity normalisation and masks, degradations."""
