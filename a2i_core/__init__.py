"""a2i: steer a frozen Stable Diffusion 3 with sound."""
