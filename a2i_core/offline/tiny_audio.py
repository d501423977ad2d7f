"""Tiny audio encoders of the real architectures, randomly initialised, for the offline profile and tests.

They are written to disk exactly as the real ones are published (torchvggish's ``.pth`` state dicts, transformers
CLAP and AST directories) and are only ever used by loading them back through the real loading code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from a2i_core.audio.frontends import empty_mel_filters_expected
from a2i_core.audio.vggish import EMBEDDING_DIM, VGGish
from a2i_core.core.errors import quiet_hf_libraries

TINY_CLAP_AUDIO = dict(
    num_mel_bins=64, spec_size=256,  # freq_ratio 4: the 1001 x 64 mel image fits 1024 x 64
    patch_size=16, patch_stride=[16, 16], window_size=8, patch_embeds_hidden_size=16, depths=[1, 1],
    num_attention_heads=[2, 2],
    hidden_size=32,  # must be patch_embeds_hidden_size * 2 ** (len(depths) - 1): the projection's input width
    projection_dim=24, enable_fusion=False, num_classes=8)
TINY_CLAP_TEXT = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      max_position_embeddings=40, projection_dim=24, bos_token_id=0, eos_token_id=2, pad_token_id=1)
TINY_CLAP_FE = dict(frequency_min=50, truncation="rand_trunc")  # laion's unfused checkpoints' settings
TINY_AST = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=16,
                frequency_stride=16, time_stride=16, num_mel_bins=128, max_length=1024)


def tiny_vggish_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """The full torchvggish architecture with PyTorch's default random init (72 M parameters)."""
    torch.manual_seed(seed)
    return VGGish().state_dict()


def tiny_vggish_pca(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(EMBEDDING_DIM, EMBEDDING_DIM, generator=generator))
    return {"pca_eigen_vectors": q, "pca_means": torch.zeros(EMBEDDING_DIM, 1)}


def save_tiny_clap(directory: str | Path, seed: int = 0, fused: bool = False) -> None:
    """A tiny whole ``ClapModel`` and its ``ClapFeatureExtractor``, saved like laion/clap-htsat-unfused (``fused``:
    like laion/clap-htsat-fused, truncation 'fusion'). The caller's torch RNG state is left as it was."""
    quiet_hf_libraries()
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    audio = {**TINY_CLAP_AUDIO, "enable_fusion": fused, "fusion_type": "aff_2d" if fused else None}
    config = ClapConfig(text_config=TINY_CLAP_TEXT, audio_config=audio,
                        projection_dim=TINY_CLAP_AUDIO["projection_dim"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config)
    model.save_pretrained(str(directory))  # transformers 5 writes safetensors only
    extractor = {**TINY_CLAP_FE, "truncation": "fusion"} if fused else TINY_CLAP_FE
    ClapFeatureExtractor(**extractor).save_pretrained(str(directory))


def save_tiny_ast(directory: str | Path, seed: int = 0, num_labels: int = 5) -> None:
    """A tiny ``ASTForAudioClassification`` and a default ``ASTFeatureExtractor``, saved like MIT/ast-finetuned-*.
    The caller's torch RNG state is left as it was."""
    quiet_hf_libraries()
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ASTForAudioClassification(ASTConfig(**TINY_AST, num_labels=num_labels))
    model.save_pretrained(str(directory))
    with empty_mel_filters_expected():
        ASTFeatureExtractor().save_pretrained(str(directory))
