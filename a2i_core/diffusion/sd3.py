"""Loading parts of a Stable Diffusion 3 pipeline: the text side or the image side, never both."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch

from a2i_core.core.errors import A2IError, first_line, quiet_hf_libraries
from a2i_core.core.hub import sd3_source

log = logging.getLogger(__name__)

TEXT_PARTS = ("text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3")
IMAGE_PARTS = ("transformer", "vae")


def load_sd3(directory: str | Path, part: Literal["text", "image"], device: torch.device,
             dtype: torch.dtype = torch.float32, use_t5: bool = True):
    """A StableDiffusion3Pipeline holding only the text encoders, or only the transformer, VAE and scheduler.

    ``use_t5=False`` leaves out T5 (4.7 B parameters for SD3 Medium) from the text side.
    """
    quiet_hf_libraries()
    from diffusers import StableDiffusion3Pipeline
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    model, revision = sd3_source(directory)
    skipped = IMAGE_PARTS if part == "text" else TEXT_PARTS
    if part == "text" and not use_t5:
        skipped += ("text_encoder_3", "tokenizer_3")
    try:
        pipe = StableDiffusion3Pipeline.from_pretrained(
            model, revision=revision, dtype=dtype, **{name: None for name in skipped})
    except GatedRepoError:
        raise A2IError(f"{model} is gated: accept its licence on the Hub, then run `hf auth login`") from None
    except (RepositoryNotFoundError, LocalEntryNotFoundError):
        raise A2IError(f"{model}: not found locally or on the Hub (check diffusion.model, or log in)") from None
    except OSError as err:
        raise A2IError(f"cannot load SD3 from {model}: {first_line(err)}") from None
    # Cast as well: without accelerate, diffusers leaves the SD3 transformer in float32 whatever dtype is asked.
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def joint_attention_dim(directory: str | Path) -> int:
    """The transformer's text width (4096 for SD3 Medium), read from its config without loading weights."""
    from diffusers import SD3Transformer2DModel

    model, revision = sd3_source(directory)
    return int(SD3Transformer2DModel.load_config(model, subfolder="transformer", revision=revision)[
        "joint_attention_dim"])
