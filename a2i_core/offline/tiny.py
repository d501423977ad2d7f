"""Tiny SD3 and CLIP of the real architectures, randomly initialised, for the offline profile and tests.

They are written to disk exactly as the real ones are published (a diffusers SD3 directory, a transformers CLIP
directory) and are only ever used by loading them back through the real loading code. Tokenizers are built from an
in-code vocabulary, so nothing is fetched. The tiny audio encoders are in :mod:`a2i_core.offline.tiny_audio`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from a2i_core.core.errors import quiet_hf_libraries
from a2i_core.core.hub import TINY, install_model

# Words the tokenizers know whole; anything else falls back to single characters.
VOCABULARY = (
    "a an the of image photo picture in on at with and police car siren ringing church bell rainy street rain "
    "idling engine bird singing tree barking dog drum kit ticking clock man woman speaking music water wind "
    "train cat sound noise"
).split()
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789,.'!?-"

def clip_tokenizer():
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab: dict[str, int] = {}
    for token in specials + list(CHARS) + [c + "</w>" for c in CHARS]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in VOCABULARY:
        # Merge left to right, so each known word becomes one token and unknown words stay as characters.
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merged = parts[0] + parts[1]
            merge = (parts[0], parts[1])
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(merged, len(vocab))
            parts = [merged] + parts[2:]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def t5_tokenizer():
    from transformers import T5TokenizerFast

    scores = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "▁": -2.0}
    for piece, score in [(f"▁{w}", -1.0) for w in VOCABULARY] + [(c, -5.0) for c in CHARS] + \
            [(f"▁{c}", -6.0) for c in CHARS]:
        scores.setdefault(piece, score)
    return T5TokenizerFast(vocab=list(scores.items()), extra_ids=0, model_max_length=512)


def save_tiny_sd3(directory: str | Path, seed: int = 0) -> None:
    """Build a tiny StableDiffusion3Pipeline (every real component type) and ``save_pretrained`` it."""
    quiet_hf_libraries()
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer, tokenizer_3 = clip_tokenizer(), t5_tokenizer()

    def clip(hidden: int) -> CLIPTextModelWithProjection:
        return CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
            num_attention_heads=4, projection_dim=hidden, max_position_embeddings=77, hidden_act="gelu",
            bos_token_id=0, eos_token_id=1, pad_token_id=1))

    text_encoder, text_encoder_2 = clip(32), clip(32)  # pooled width 32 + 32 = 64
    text_encoder_3 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_3), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=8, num_layers=2, attention_head_dim=16, num_attention_heads=4,
        joint_attention_dim=32, caption_projection_dim=64, pooled_projection_dim=64, out_channels=8,
        pos_embed_max_size=32)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1, norm_num_groups=8, sample_size=64, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.0609, scaling_factor=1.5035)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=clip_tokenizer(),
        text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)
    pipe.save_pretrained(str(directory), safe_serialization=True)


def save_tiny_clip(directory: str | Path, seed: int = 0) -> None:
    """A tiny CLIP (text and vision towers) with its processor, ``save_pretrained`` like the Hub's."""
    quiet_hf_libraries()
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        projection_dim=32)
    CLIPModel(config).save_pretrained(str(directory))
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(str(directory))


def build_pretrained(out_dir: str | Path, build: Callable[[Path], None],
                     check: Callable[[Path], None] | None = None) -> dict:
    """A tiny model built by ``build`` into ``out_dir``, recorded in its ``source.json`` as ``tiny`` (the folder holds
    the model itself); ``check`` (when given) sees the folder before it is put in place."""
    return install_model(out_dir, {"model": TINY, "revision": None}, build, check)
