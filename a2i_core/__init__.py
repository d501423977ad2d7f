"""a2i: steer a frozen Stable Diffusion 3 with sound.

The packages are the architecture, each resting only on those before it: ``core`` (the foundation), ``data`` (clips
and labels in), ``audio`` and ``diffusion`` (the frozen encoders and renderer), ``mapper`` (what is learnt),
``serve`` (sound to image for a user), ``pipeline`` (one body per DVC stage) and, apart, ``offline`` (the demo's tiny
models). Each package's docstring says what it may import (``May import:``); tests/test_layers.py holds the code to
them. ``cli`` is the program on top of all of them.
"""
