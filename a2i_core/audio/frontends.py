"""CLAP's and AST's feature extractors as batched torch frontends, and the window rule both share.

The feature extractors are numpy, one clip at a time, and CLAP's crops long audio at random; the frontends here
compute the same model inputs in torch, batched, on any device, and never at random. Their parity with the
extractors is tested window by window.

Window rule (a pure function of the waveform's length, so streaming can reproduce it): a waveform at the
encoder's sample rate is cut into consecutive windows, window k starting at ``k * stride``. Every full window is
kept; the remaining tail is kept if it is at least half a window long, or if it is the only window (a clip
shorter than one window). A tail is padded as the extractor pads a short clip: CLAP repeats it (``repeatpad``,
or the extractor's ``padding``) then zero-pads the waveform; AST zero-pads the fbank frames. A shorter tail is
not heard (``unheard_samples`` says how much; generate notes it): a 14.9 s clip is CLAP's first 10 s.

- CLAP: window = stride = the extractor's ``nb_max_samples`` (10 s at 48 kHz, 1001 centred frames).
- AST: window = the samples of ``max_length`` frames (400 + 1023 * 160 = 164080 at 16 kHz), stride =
  ``max_length * 160`` (10.24 s), so consecutive windows continue one frame grid with no frame lost or repeated.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from a2i_core.core.errors import A2IError

if TYPE_CHECKING:
    from transformers import ASTFeatureExtractor, ClapFeatureExtractor

CLAP_SAMPLE_RATE = 48_000  # HTSAT's 480-sample hop is 10 ms only at 48 kHz
AST_SAMPLE_RATE = 16_000  # the extractor's 400 / 160 / 512 frame, hop and FFT are fixed in samples
CLAP_PADDINGS = ("repeatpad", "repeat", "pad")
# AST's kaldi-style fbank, as ASTFeatureExtractor computes it without torchaudio.
AST_FRAME, AST_HOP, AST_FFT = 400, 160, 512
AST_PREEMPHASIS = 0.97
AST_MEL_FLOOR = 1.192092955078125e-07  # float32 epsilon, as kaldi
AST_MIN_HZ = 20
CLAP_MEL_FLOOR = 1e-10  # -100 dB
WINDOWS_PER_FFT = 16  # windows transformed at once: bounds the float64 STFT's memory (~30 MB a CLAP window)


@contextmanager
def empty_mel_filters_expected() -> Iterator[None]:
    # AST's 128 kaldi bands on a 257-bin FFT leave the lowest filter empty, as in the original; transformers warns
    # about it each time an AST extractor or filter bank is built.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values", category=UserWarning)
        yield


def window_spans(n_samples: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(start, size) of each window of a waveform of ``n_samples``, by the module's window rule."""
    full = 0 if n_samples < window else (n_samples - window) // stride + 1
    spans = [(k * stride, window) for k in range(full)]
    tail = n_samples - full * stride
    # A tail shorter than half a window is dropped, not padded: the reference extractors pad only a clip shorter
    # than their one window, and drop what lies past it (ASTFeatureExtractor keeps the first max_length frames;
    # ClapFeatureExtractor's 'rand_trunc' one random 10 s crop, 'fusion' three random crops beside a shrunken view
    # of the whole). A padded short tail would be a whole window, weighing as much as a full one in the clip's
    # mean, made mostly of repeats (repeatpad tiles a 0.2 s tail 50 times) or of silence.
    if (full == 0 and n_samples > 0) or (full > 0 and 2 * tail >= window):
        spans.append((full * stride, tail))
    return spans


def unheard_samples(n_samples: int, window: int, stride: int) -> int:
    """How many samples at the end of a waveform of ``n_samples`` no window reads, by the module's window rule."""
    spans = window_spans(n_samples, window, stride)
    if not spans:
        return n_samples
    start, size = spans[-1]
    # A padded tail is heard to its end; a full last window reads `window` samples.
    return n_samples - (start + size)


def _check_waves(waves: list[torch.Tensor]) -> None:
    for i, wave in enumerate(waves):
        if wave.ndim != 1 or wave.numel() == 0:
            raise A2IError(f"audio waveform {i} has shape {tuple(wave.shape)}: expected a non-empty mono waveform")


class ClapFrontend(nn.Module):
    """48 kHz waveforms -> ClapFeatureExtractor's log-mel (dB) windows, (n, 1, 1001, 64) (4 equal channels when the
    extractor's truncation is 'fusion', as the extractor stacks them for a clip no longer than a window).

    The STFT is float64 like the extractor's: decibels down to -100 dB magnify float32 FFT rounding in quiet bands.
    """

    def __init__(self, extractor: ClapFeatureExtractor) -> None:
        super().__init__()
        from transformers.audio_utils import window_function

        if extractor.padding not in CLAP_PADDINGS:
            raise A2IError(f"CLAP feature extractor padding {extractor.padding!r} is none of {CLAP_PADDINGS}")
        self.window_samples = int(extractor.nb_max_samples)
        self.hop = int(extractor.hop_length)
        self.fft = int(extractor.fft_window_size)
        self.padding = extractor.padding
        fusion = extractor.truncation == "fusion"
        self.channels = 4 if fusion else 1
        # The extractor takes kaldi/htk filters for 'fusion' and librosa's slaney ones otherwise.
        filters = extractor.mel_filters if fusion else extractor.mel_filters_slaney
        self.register_buffer("window", torch.from_numpy(window_function(self.fft, "hann")))  # periodic, float64
        self.register_buffer("mel", torch.from_numpy(filters))  # (fft / 2 + 1, mels) float64
        self.description = (
            f"clap-logmel-v1-{extractor.sampling_rate / 1000:g}k-{extractor.feature_size}mel-"
            f"{extractor.frequency_min:g}-{extractor.frequency_max:g}hz-{'htk' if fusion else 'slaney'}-"
            f"fft{self.fft}-hop{self.hop}-{extractor.max_length_s:g}s-{self.padding}")

    def window_count(self, n_samples: int) -> int:
        return len(window_spans(n_samples, self.window_samples, self.window_samples))

    def batch(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        """Model inputs for every window of every waveform: ((sum n_i, 1 or 4, 1001, mels) float32, [n_i])."""
        _check_waves(waves)
        rows, counts = [], []
        for wave in waves:
            wave = wave.to(self.window.device, self.window.dtype)
            spans = window_spans(wave.numel(), self.window_samples, self.window_samples)
            rows += [self._padded(wave[start : start + size]) for start, size in spans]
            counts.append(len(spans))
        windows = torch.stack(rows)  # (W, window_samples) float64
        mel = torch.cat([self._log_mel(part) for part in windows.split(WINDOWS_PER_FFT)])  # (W, frames, mels)
        return mel.float()[:, None].expand(-1, self.channels, -1, -1), counts

    def _padded(self, segment: torch.Tensor) -> torch.Tensor:
        # The extractor's padding of a clip shorter than a window: 'repeatpad' tiles it a whole number of times
        # and zero-pads the rest, 'repeat' tiles it to the end, 'pad' zero-pads.
        size, n = segment.numel(), self.window_samples
        if size == n:
            return segment
        kept = {"repeatpad": (n // size) * size, "repeat": n, "pad": size}[self.padding]
        position = torch.arange(n, device=segment.device)
        return torch.where(position < kept, segment[position % size], 0.0)

    def _log_mel(self, windows: torch.Tensor) -> torch.Tensor:
        half = self.fft // 2
        padded = nn.functional.pad(windows[:, None], (half, half), mode="reflect")[:, 0]  # centred STFT
        frames = padded.unfold(1, self.fft, self.hop)  # (w, 1 + window_samples // hop, fft)
        power = torch.fft.rfft(frames * self.window).abs() ** 2  # (w, frames, fft / 2 + 1)
        mel = torch.clamp(power @ self.mel, min=CLAP_MEL_FLOOR)  # (w, frames, mels)
        return 10.0 * torch.log10(mel)  # the extractor ignores top_db: no dynamic-range clipping


class ASTFrontend(nn.Module):
    """16 kHz waveforms -> ASTFeatureExtractor's normalised kaldi fbank windows, (n, max_length, mel bins).

    Reproduces the extractor's numpy path (the one it takes without torchaudio), float64 like it.
    """

    def __init__(self, extractor: ASTFeatureExtractor) -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank, window_function

        self.max_length = int(extractor.max_length)
        self.window_samples = AST_FRAME + (self.max_length - 1) * AST_HOP
        self.stride = self.max_length * AST_HOP
        self.normalize = bool(extractor.do_normalize)
        self.mean, self.std = float(extractor.mean), float(extractor.std)
        # Built here rather than taken from the extractor: it only holds filters when torchaudio is absent.
        with empty_mel_filters_expected():
            filters = mel_filter_bank(
                num_frequency_bins=AST_FFT // 2 + 1, num_mel_filters=extractor.num_mel_bins, min_frequency=AST_MIN_HZ,
                max_frequency=extractor.sampling_rate // 2, sampling_rate=extractor.sampling_rate, norm=None,
                mel_scale="kaldi", triangularize_in_mel_space=True)
        self.register_buffer("window", torch.from_numpy(window_function(AST_FRAME, "hann", periodic=False)))
        self.register_buffer("mel", torch.from_numpy(filters))  # (257, mel bins) float64
        norm = f"mean{self.mean:.7g}-std{self.std:.7g}" if self.normalize else "unnormalised"
        self.description = (f"ast-fbank-v1-{extractor.sampling_rate / 1000:g}k-{extractor.num_mel_bins}mel-"
                            f"hop{AST_HOP}-{self.max_length}frames-zeropad-{norm}")

    def window_count(self, n_samples: int) -> int:
        return len(window_spans(n_samples, self.window_samples, self.stride))

    def batch(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        """Model inputs for every window of every waveform: ((sum n_i, max_length, mel bins) float32, [n_i])."""
        _check_waves(waves)
        rows, frames, counts = [], [], []
        for wave in waves:
            wave = wave.to(self.window.device, self.window.dtype)
            spans = window_spans(wave.numel(), self.window_samples, self.stride)
            for start, size in spans:
                rows.append(nn.functional.pad(wave[start : start + size], (0, self.window_samples - size)))
                frames.append(max(0, 1 + (size - AST_FRAME) // AST_HOP))  # the extractor's frames of this window
            counts.append(len(spans))
        windows = torch.stack(rows)  # (W, window_samples) float64
        fbank = torch.cat([self._fbank(part) for part in windows.split(WINDOWS_PER_FFT)])  # (W, max_length, mels)
        # Frames past a short window's end are zero log-mel, as the extractor pads the fbank (before normalising).
        frames_held = torch.tensor(frames, device=fbank.device)[:, None]  # (W, 1)
        present = torch.arange(self.max_length, device=fbank.device) < frames_held  # (W, max_length)
        fbank = torch.where(present[..., None], fbank, 0.0).float()
        if self.normalize:  # in float32, the extractor's order of operations
            fbank = (fbank - self.mean) / (self.std * 2)
        return fbank, counts

    def _fbank(self, windows: torch.Tensor) -> torch.Tensor:
        frames = windows.unfold(1, AST_FRAME, AST_HOP)  # (w, max_length, 400), no centring
        frames = frames - frames.mean(-1, keepdim=True)  # kaldi's per-frame DC removal
        frames = torch.cat([frames[..., :1] * (1 - AST_PREEMPHASIS),
                            frames[..., 1:] - AST_PREEMPHASIS * frames[..., :-1]], -1)
        power = torch.fft.rfft(frames * self.window, n=AST_FFT).abs() ** 2  # (w, max_length, 257)
        return torch.log(torch.clamp(power @ self.mel, min=AST_MEL_FLOOR))  # (w, max_length, mels)
