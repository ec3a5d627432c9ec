"""Training of the mini profile's pretrained models (the role the official checkpoints play in ffhq)."""
