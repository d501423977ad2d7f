import numpy as np

from a2i_core.data.sources.synthetic import SAMPLE_RATE, SOUND_CLASSES, clip_specs, synthesize


def _spectrum(wave: np.ndarray) -> np.ndarray:
    spec = np.abs(np.fft.rfft(wave[: SAMPLE_RATE], n=SAMPLE_RATE))
    return spec / spec.sum()


def test_clips_are_deterministic_and_varied():
    specs = clip_specs(list(SOUND_CLASSES), 4, 0.5, 4.0, seed=3)
    again = clip_specs(list(SOUND_CLASSES), 4, 0.5, 4.0, seed=3)
    assert specs == again and len(specs) == 4 * len(SOUND_CLASSES)
    assert np.array_equal(synthesize(specs["bell_0001"]), synthesize(again["bell_0001"]))
    lengths = {s.seconds for s in specs.values()}
    gains = {s.gain_db for s in specs.values()}
    assert len(lengths) > 20 and len(gains) > 20
    assert all(0.5 <= s.seconds <= 4.0 for s in specs.values())


def test_a_class_keeps_its_clips_when_others_are_added():
    alone = clip_specs(["dog"], 3, 0.5, 4.0, seed=0)
    together = clip_specs(["siren", "dog"], 3, 0.5, 4.0, seed=0)
    assert alone["dog_0002"] == together["dog_0002"]


def test_waveforms_are_normalised_to_their_gain():
    for spec in clip_specs(list(SOUND_CLASSES), 2, 0.5, 2.0, seed=1).values():
        wave = synthesize(spec)
        assert wave.dtype == np.float32 and wave.size == round(spec.seconds * SAMPLE_RATE)
        assert np.isclose(20 * np.log10(np.abs(wave).max()), spec.gain_db, atol=0.01)


def test_classes_sound_different():
    # Average spectra of two clips per class: every class is closer to itself than to any other class.
    specs = clip_specs(list(SOUND_CLASSES), 6, 1.5, 2.0, seed=0)
    spectra = {}
    for spec in specs.values():
        spectra.setdefault(spec.label, []).append(_spectrum(synthesize(spec)))
    centroids = {k: np.mean(v[:3], axis=0) for k, v in spectra.items()}
    for label, clips in spectra.items():
        for clip in clips[3:]:
            dist = {other: np.abs(np.log(clip + 1e-7) - np.log(c + 1e-7)).mean() for other, c in centroids.items()}
            assert min(dist, key=dist.get) == label
