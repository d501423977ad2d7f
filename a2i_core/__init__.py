"""a2i: steer a frozen Stable Diffusion 3 with sound."""

__version__ = "0.1.0"
