import numpy as np
import torch

from a2i_core.diffusion.prompt_embeddings import encode
from a2i_core.diffusion.render import RenderSettings, compile_for_speed, render
from a2i_core.diffusion.sd3 import load_sd3


def test_images_depend_on_seed_not_on_batching(tiny_sd3_dir):
    text = load_sd3(tiny_sd3_dir, "text", torch.device("cpu"))
    pooled, sequence = encode(text, ["an image of a dog", "an image of a bell", ""], 8)
    image_pipe = load_sd3(tiny_sd3_dir, "image", torch.device("cpu"))
    cpu = torch.device("cpu")

    def run(batch_size: int):
        settings = RenderSettings(steps=2, guidance=4.0, size=32, seed=5, batch_size=batch_size)
        empty = sequence[2].numpy()
        return render(image_pipe, pooled[:2], lambda idx: np.stack([empty] * len(idx)), pooled[2], empty, settings,
                      cpu, torch.float32)

    one_by_one, together = [im for _, im in run(1)], [im for _, im in run(2)]
    assert [im.size for im in together] == [(32, 32), (32, 32)]
    for a, b in zip(one_by_one, together, strict=True):
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 1
    # The pooled embedding steers the image.
    assert np.abs(np.asarray(together[0], np.int16) - np.asarray(together[1], np.int16)).mean() > 1


def _dog_and_bell(tiny_sd3_dir):
    text = load_sd3(tiny_sd3_dir, "text", torch.device("cpu"))
    pooled, sequence = encode(text, ["an image of a dog", "an image of a bell", ""], 8)
    return pooled, np.asarray(sequence[2])


def _render(pipe, pooled, empty, dtype, n=2, size=32):
    settings = RenderSettings(steps=2, guidance=4.0, size=size, seed=5, batch_size=2)
    rows = pooled[np.arange(n) % 2]
    return [np.asarray(im, np.int16) for _, im in render(
        pipe, rows, lambda idx: np.stack([empty] * len(idx)), pooled[2], empty, settings, torch.device("cpu"), dtype)]


def test_image_side_loads_and_renders_in_bfloat16(tiny_sd3_dir):
    pooled, empty = _dog_and_bell(tiny_sd3_dir)
    pipe = load_sd3(tiny_sd3_dir, "image", torch.device("cpu"), torch.bfloat16)
    assert {p.dtype for p in pipe.transformer.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in pipe.vae.parameters()} == {torch.bfloat16}
    reference = _render(load_sd3(tiny_sd3_dir, "image", torch.device("cpu")), pooled, empty, torch.float32)
    for a, b in zip(_render(pipe, pooled, empty, torch.bfloat16), reference, strict=True):
        assert np.abs(a - b).mean() < 8  # bf16 rounding, not a different image


def test_compiled_transformer_and_decoder_render_the_same_images(tiny_sd3_dir):
    from torch._dynamo.utils import counters

    pooled, empty = _dog_and_bell(tiny_sd3_dir)
    pipe = load_sd3(tiny_sd3_dir, "image", torch.device("cpu"))
    # 64² in batches of 2: the shapes of the render benchmark's tiny run, whose compilation then hits the cache.
    eager = _render(pipe, pooled, empty, torch.float32, n=4, size=64)
    torch._dynamo.reset()
    counters.clear()
    compile_for_speed(pipe)
    compiled = _render(pipe, pooled, empty, torch.float32, n=4, size=64)  # 2 batches, 1 graph each
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 2  # the transformer and the VAE decoder, each compiled once
    for a, b in zip(compiled, eager, strict=True):
        assert np.abs(a - b).max() <= 2


def test_render_from_stored_embeddings_equals_the_pipelines_own_prompt_call(tiny_sd3_dir, tmp_path):
    # render never loads the text encoders: it reads the embed_text stage's stored pooled and whole sequence of a
    # prompt, and the stored empty prompt as the negative. It must draw what diffusers draws from the prompt itself.
    from diffusers import StableDiffusion3Pipeline

    from a2i_core.diffusion.prompt_embeddings import embed_prompts, load_guidance, load_sequences, load_text_features

    prompts, cpu = ["an image of a barking dog", "an image of a ticking clock"], torch.device("cpu")
    embed_prompts(load_sd3(tiny_sd3_dir, "text", cpu), prompts, tmp_path, tokens=4, max_sequence_length=32,
                  batch_size=2, shard_rows=8, diffusion_model="tiny", store_sequence=True)
    stored, pooled = load_text_features(tmp_path)
    pooled = pooled[[stored.index(p) for p in prompts]]  # (2, P)
    sequences = load_sequences(tmp_path, prompts)  # (2, 77 + 32, D)
    empty_pooled, empty_sequence = load_guidance(tmp_path)
    settings = RenderSettings(steps=4, guidance=5.0, size=64, seed=11, batch_size=2)
    ours = [np.asarray(im, np.int16) for _, im in render(
        load_sd3(tiny_sd3_dir, "image", cpu), pooled, lambda idx: sequences[idx], empty_pooled, empty_sequence,
        settings, cpu, torch.float32)]

    pipe = StableDiffusion3Pipeline.from_pretrained(str(tiny_sd3_dir), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt=prompts, negative_prompt="", max_sequence_length=32, num_inference_steps=settings.steps,
                  guidance_scale=settings.guidance, height=settings.size, width=settings.size,
                  generator=[torch.Generator().manual_seed(settings.seed + i) for i in range(2)]).images
    for a, b in zip(ours, theirs, strict=True):
        assert np.abs(a - np.asarray(b, np.int16)).max() <= 1  # float rounding of the batched text encoders at most
    assert np.abs(ours[0] - ours[1]).mean() > 1  # two prompts, two pictures: the comparison is not of blanks
