import numpy as np
import pytest
import torch

from a2i_core.core import shards
from a2i_core.diffusion.prompt_embeddings import TEXT_KIND, embed_prompts, encode, load_guidance, load_text_features
from a2i_core.diffusion.sd3 import load_sd3


@pytest.fixture(scope="module")
def text_pipe(tiny_sd3_dir):
    return load_sd3(tiny_sd3_dir, "text", torch.device("cpu"))


def test_one_encoder_call_per_unique_prompt(tmp_path, text_pipe):
    prompts = ["an image of a dog", "an image of a bell", "an image of a dog"] * 5
    stats = embed_prompts(text_pipe, prompts, tmp_path, tokens=5, max_sequence_length=16, batch_size=2,
                          shard_rows=2, diffusion_model="tiny")
    assert stats["prompts"] == 3 and stats["encoder_calls"] == 3  # two prompts and the empty one
    assert len(shards.shard_paths(tmp_path)) == 2
    table = shards.read_shards(tmp_path, TEXT_KIND)
    assert sorted(table["prompt"].to_pylist()) == ["", "an image of a bell", "an image of a dog"]
    assert shards.to_numpy(table["tokens"]).shape == (3, 5, 32)
    assert table["tokens"].type.value_type.value_type == "halffloat"

    names, pooled = load_text_features(tmp_path)
    assert names == ["an image of a bell", "an image of a dog"] and pooled.shape == (2, 64)
    empty_pooled, empty_sequence = load_guidance(tmp_path)
    assert empty_sequence.shape == (77 + 16, 32)

    # Stored values are what the pipeline's own encode_prompt gives.
    ref_pooled, ref_sequence = encode(text_pipe, ["an image of a dog", ""], 16)
    assert np.allclose(pooled[1], ref_pooled[0], atol=1e-6)
    assert np.allclose(empty_pooled, ref_pooled[1], atol=1e-6)
    assert np.allclose(empty_sequence, ref_sequence[1].numpy(), atol=1e-2)  # float16 storage


def test_without_t5_its_part_is_zeros_and_clip_part_unchanged(tmp_path, tiny_sd3_dir, text_pipe):
    from a2i_core.diffusion.sd3 import joint_attention_dim

    no_t5 = load_sd3(tiny_sd3_dir, "text", torch.device("cpu"), use_t5=False)
    assert no_t5.text_encoder_3 is None and no_t5.tokenizer_3 is None
    width = joint_attention_dim(tiny_sd3_dir)
    pooled, sequence = encode(no_t5, ["an image of a dog"], 16, joint_width=width)
    ref_pooled, ref_sequence = encode(text_pipe, ["an image of a dog"], 16)
    assert sequence.shape == ref_sequence.shape == (1, 77 + 16, width)
    assert torch.all(sequence[:, 77:] == 0)
    assert torch.allclose(sequence[:, :77], ref_sequence[:, :77], atol=1e-6)  # same composition as diffusers
    assert np.allclose(pooled, ref_pooled, atol=1e-6)


def test_whole_sequences_are_stored_on_request(tmp_path, text_pipe):
    embed_prompts(text_pipe, ["an image of a dog"], tmp_path, tokens=3, max_sequence_length=8, batch_size=4,
                  shard_rows=10, diffusion_model="tiny", store_sequence=True)
    table = shards.read_shards(tmp_path, TEXT_KIND)
    assert shards.to_numpy(table["sequence"]).shape == (2, 77 + 8, 32)
    assert np.array_equal(shards.to_numpy(table["sequence"])[:, :3], shards.to_numpy(table["tokens"]))
