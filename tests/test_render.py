import numpy as np
import torch

from a2i_core.render import RenderSettings, compile_for_speed, render
from a2i_core.sd3 import load_sd3
from a2i_core.text import encode


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
