"""DeformGAN: pose-guided person image generation (Siarohin et al., CVPR 2018)."""
