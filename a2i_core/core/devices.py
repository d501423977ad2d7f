"""Device and dtype choice, with one clear message when a demanded GPU is missing."""

from __future__ import annotations

import logging

import torch

from a2i_core.core.errors import A2IError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
AUTO = "auto"  # bfloat16 on a CUDA GPU that has it, else float16 on a GPU, float32 on the CPU


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; an explicit 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise A2IError(f"device {name!r} asked for, but no CUDA GPU is visible (set device: auto or cpu)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise A2IError("device 'mps' asked for, but Apple MPS is not available (set device: auto or cpu)")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Half precision only where it is fast: on CPU it is slow or unsupported, so fall back to float32 and say so
    (``auto`` chooses for the device, silently)."""
    if name == AUTO:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    dtype = DTYPES[name]
    if device.type == "cpu" and dtype != torch.float32:
        log.warning("dtype %s asked for on CPU: using float32", name)
        return torch.float32
    return dtype
