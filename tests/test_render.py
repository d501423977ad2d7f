import numpy as np
import torch

from a2i_core.render import RenderSettings, render
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
