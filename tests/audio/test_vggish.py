import numpy as np
import torch

from a2i_core.audio.vggish import (
    EXAMPLE_FRAMES,
    HOP,
    MIN_SAMPLES,
    WINDOW,
    LogMelFrontend,
    Postprocessor,
    VGGish,
    mel_matrix,
)

# The parameter names of torchvggish's released state dict.
TORCHVGGISH_KEYS = {f"features.{i}.{p}" for i in (0, 3, 6, 8, 11, 13) for p in ("weight", "bias")} | {
    f"embeddings.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}


def test_architecture_matches_torchvggish():
    model = VGGish()
    assert set(model.state_dict()) == TORCHVGGISH_KEYS
    assert 72.0e6 < sum(p.numel() for p in model.parameters()) < 72.2e6
    assert model(torch.zeros(3, 1, 96, 64)).shape == (3, 128)


def test_frontend_example_counts_and_short_clip_padding():
    frontend = LogMelFrontend()
    for seconds in (0.2, 0.96, 1.5, 10.0):
        n = int(seconds * 16000)
        examples = frontend(torch.randn(n) * 0.1)
        assert examples.shape[1:] == (1, EXAMPLE_FRAMES, 64)
        assert examples.shape[0] == max(1, 1 + ((n - WINDOW) // HOP + 1 - EXAMPLE_FRAMES) // EXAMPLE_FRAMES)
        assert examples.shape[0] == frontend.num_examples(n)
    # A short clip is repeated rather than padded with silence: no frame is the log of nothing.
    short = frontend(torch.randn(4000, generator=torch.Generator().manual_seed(0)) * 0.1)
    frame_energy = short[0, 0].mean(1)  # (96,)
    assert short.shape[0] == 1 and frame_energy[-10:].min() > frame_energy[:10].mean() - 0.5
    assert MIN_SAMPLES == 15600


def test_a_tone_lights_the_right_mel_band():
    t = torch.arange(16000) / 16000
    examples = LogMelFrontend()(torch.sin(2 * torch.pi * 1000 * t))
    band = examples[0, 0].mean(0).argmax().item()  # loudest of the 64 bands
    weights = mel_matrix()
    peak_bin = round(1000 / 8000 * 256)
    assert weights[peak_bin, band] > 0


def test_mel_matrix_shape_and_dc():
    weights = mel_matrix()
    assert weights.shape == (257, 64) and np.all(weights[0] == 0) and np.all(weights.max(0) > 0)


def test_postprocess_quantises_to_bytes():
    post = Postprocessor(torch.eye(128), torch.zeros(128, 1))
    out = post(torch.tensor([[-5.0] * 64 + [0.0] * 32 + [5.0] * 32]))
    assert out.min() == 0 and out.max() == 255 and torch.all(out == out.round())


# --- Agreement with torchvggish, the reference implementation -------------------------------------------

def _reference_model(weights):
    from torchvggish import torchvggish as tv

    model = tv._vgg(postprocess=False)  # the reference architecture, without its hub download
    model.load_state_dict(weights)
    return model.eval()


def _test_waves():
    from a2i_core.data.sources.synthetic import clip_specs, synthesize

    rng = np.random.default_rng(0)
    noise = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (15600, 16000, 48123, 160000)]
    sounds = [synthesize(s) for s in clip_specs(["bell", "siren", "birds", "engine"], 1, 1.0, 6.0, 0).values()]
    return noise + sounds


def test_frontend_matches_waveform_to_examples():
    from torchvggish import vggish_input

    frontend = LogMelFrontend()
    for wave in _test_waves():
        reference = vggish_input.waveform_to_examples(wave, 16000).detach().numpy()
        ours = frontend(torch.from_numpy(wave)).numpy()
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() < 1e-4


def test_batched_frontend_matches_one_clip_at_a_time():
    frontend = LogMelFrontend()
    waves = [torch.from_numpy(w) for w in _test_waves()]
    together, counts = frontend.batch(waves)
    assert counts == [frontend.num_examples(w.shape[0]) for w in waves]
    assert torch.equal(together, torch.cat([frontend(w) for w in waves]))


def test_embeddings_and_postprocess_match_torchvggish(tiny_vggish_dir):
    from torchvggish import torchvggish as tv

    from a2i_core.audio.encoder import load_audio_encoder

    encoder = load_audio_encoder(tiny_vggish_dir, postprocess=True)
    reference = _reference_model(encoder.model.state_dict())
    examples = LogMelFrontend()(torch.from_numpy(_test_waves()[3]))  # 10 examples
    with torch.no_grad():
        ours, theirs = encoder.model(examples), reference(examples)
        assert torch.allclose(ours, theirs, atol=1e-6)
        post = tv.Postprocessor.__new__(tv.Postprocessor)  # the reference math, without its hub download
        post._pca_matrix = encoder.postprocessor.eigen_vectors
        post._pca_means = encoder.postprocessor.means.reshape(-1, 1)
        quantised = encoder.postprocessor(ours)
        assert quantised.shape == (10, 128) and torch.equal(quantised, post.postprocess(theirs))
