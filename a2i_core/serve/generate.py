"""Any sound to an image with a trained mapper: decode -> VGGish -> mapper -> SD3 (transformer + VAE only).

Models are loaded once; many files are embedded in one batch and rendered in batches. A file is heard up to a cap
(``max_seconds``: a header can claim days of audio), with a progress line in the log now and then while a long one
is decoded; anything that is not a regular file is named for what it is and never opened. The encoders are checked
against the mapper's provenance: other VGGish weights, another postprocess setting or frontend, or another SD3
are refused, since the mapper never saw such features (a mapper that learnt from AudioSet's released embeddings
takes the local VGGish with the same PCA, with a note).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from a2i_core.audio.encoder import AudioEncoder, encoder_for
from a2i_core.audio.features import embed_path
from a2i_core.core.audio_io import AUDIO_SUFFIXES, SAMPLE_RATE, claimed_seconds, not_a_file
from a2i_core.core.devices import resolve_device, resolve_dtype
from a2i_core.core.errors import A2IError
from a2i_core.core.hub import model_identity
from a2i_core.core.params import LayersParams
from a2i_core.diffusion.fills import SequenceFill, fill_sequence
from a2i_core.diffusion.render import RenderSettings, render
from a2i_core.diffusion.sd3 import load_sd3
from a2i_core.layers.answer import Layer
from a2i_core.layers.draw import Layered, bank_fill, conditioning, draw, find_layers, scorer
from a2i_core.layers.head import LabelHead, audio_part
from a2i_core.layers.stereo import hear_channels
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.mapper.model import predict_clips

log = logging.getLogger(__name__)
SILENCE_RMS = 1e-4  # -80 dBFS: nothing for VGGish to hear
MIN_HEARD_SAMPLES = 1600  # 0.1 s: shorter, repeating it to one VGGish example would be a tone of its own making
# A dropped tail shorter than this is rounding, not worth a note (VGGish's is always under one 0.96 s example).
UNHEARD_NOTE_SECONDS = 1.0
WINDOW_NAMES = {"vggish": "VGGish example", "clap": "CLAP window", "ast": "AST window"}
PROGRESS_EVERY_S = 10.0  # between progress lines: a long recording shows it is moving; a short one (most) prints none


def image_seeds(first_seed: int, count: int) -> list[int]:
    """The noise seeds of one sound's ``count`` images: image k takes ``first_seed + k`` (`a2i generate
    --images-per-sound` and the app's "Images" alike, so an image can be made again from its seed)."""
    return [first_seed + k for k in range(count)]


def pick_device(name: str) -> torch.device:
    """Like params' devices, but a missing GPU falls back to the CPU with a warning instead of stopping."""
    try:
        return resolve_device(name)
    except A2IError:
        log.warning("no %s device is visible: falling back to the CPU (slow for a real SD3)", name)
        return torch.device("cpu")


@dataclass
class Heard:
    frames: np.ndarray  # (n, D): one embedding per encoder window
    seconds: float  # what was heard (up to the cap)
    notes: list[str]  # what was done to it that the user should know


@dataclass
class Sound:
    path: Path
    pooled: np.ndarray  # (P,)
    tokens: np.ndarray | None  # (N, D)
    nearest: list[tuple[str, float]]
    images: list[Image.Image] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was done to it that the user should know
    layers: list[Layer] = field(default_factory=list)  # asked to layer: the sounds it holds, placed (else none)


class SoundToImage:
    """Sound files to images: VGGish, the trained mapper and SD3's image side (no text encoders) on one device."""

    def __init__(self, artifact: MapperArtifact, encoder: AudioEncoder, pipe, device: torch.device,
                 dtype: torch.dtype, max_seconds: float | None = None, head: LabelHead | None = None) -> None:
        transformer, config = pipe.transformer.config, artifact.mapper.config
        width = artifact.empty_sequence.shape[1]
        if transformer.pooled_projection_dim != config.pooled_dim or transformer.joint_attention_dim != width:
            raise A2IError(f"this SD3 takes pooled {transformer.pooled_projection_dim} / text "
                           f"{transformer.joint_attention_dim} wide, the mapper gives {config.pooled_dim} / {width}")
        self.artifact, self.encoder, self.pipe, self.device, self.dtype = artifact, encoder, pipe, device, dtype
        self.max_seconds = max_seconds  # a longer recording is heard up to here, with a note; None: no cap
        self.frontend = encoder.place(device)
        if head is not None:
            head.check_fits(artifact.prompts, audio_part(config.provenance))
        self.head = head  # which sounds a clip holds (layers.answer head); None: only nnls can answer

    def load_head(self, directory: str | Path) -> None:
        """The label head in ``directory``, which must have been trained for this mapper's prompt bank and audio."""
        head = LabelHead.from_pretrained(directory)
        head.check_fits(self.artifact.prompts, audio_part(self.artifact.mapper.config.provenance))
        self.head = head

    @classmethod
    def from_pretrained(cls, mapper_dir: str | Path, audio_encoder_dir: str | Path, sd3_dir: str | Path,
                        device: torch.device, dtype: str = "bfloat16", max_seconds: float | None = None,
                        label_head_dir: str | Path | None = None) -> SoundToImage:
        """Load the three parts, checking that VGGish and SD3 are those whose features the mapper learnt from; each
        sound is then heard up to ``max_seconds`` (None: whole). With ``label_head_dir``, the label head too
        (``load_head``)."""
        artifact = MapperArtifact.load(mapper_dir)
        provenance = artifact.mapper.config.provenance
        encoder = encoder_for(provenance, audio_encoder_dir)
        provenance.check(str(sd3_dir), diffusion_model=model_identity(sd3_dir))
        torch_dtype = resolve_dtype(dtype, device)
        pipe = load_sd3(sd3_dir, "image", device, torch_dtype)
        try:
            made = cls(artifact, encoder, pipe, device, torch_dtype, max_seconds)
        except A2IError as err:
            raise A2IError(f"{sd3_dir}: {err}") from None
        if label_head_dir is not None:
            made.load_head(label_head_dir)
        return made

    @torch.inference_mode()
    def hear(self, path: Path, levels: list[np.ndarray] | None = None, channel: int | None = None) -> Heard:
        """Decode (a window at a time: memory does not grow with the recording) and embed one file, up to
        ``max_seconds``, with the notes the user should read. A2IError when it cannot be heard. Given ``levels``,
        each window's level in dBFS is appended (``embed_path``'s); given ``channel`` (0 left, 1 right), that channel
        is heard instead of the mono mix."""
        encoder = self.encoder
        cap = None if self.max_seconds is None else max(1, round(self.max_seconds * encoder.sample_rate))
        frames, decoded, rms = embed_path(encoder, self.frontend, path, batch_size=64, device=self.device,
                                          max_samples=cap, progress=DecodeProgress(path, encoder.sample_rate, cap),
                                          levels=levels, channel=channel)
        samples = decoded if cap is None else min(decoded, cap)
        seconds = samples / encoder.sample_rate
        if seconds * SAMPLE_RATE < MIN_HEARD_SAMPLES:
            raise A2IError(f"{path}: {seconds:.4f} s is too short to hear (at least "
                           f"{MIN_HEARD_SAMPLES / SAMPLE_RATE} s)")
        if not np.isfinite(rms) or not np.isfinite(frames).all():
            raise A2IError(f"{path}: holds samples that are not numbers (NaN or infinity): it cannot be heard")
        if rms < SILENCE_RMS:
            raise A2IError(f"{path}: silent (RMS below -80 dBFS): there is nothing to hear")
        notes = []
        if cap is not None and decoded > cap:
            notes.append(f"longer than {self.max_seconds:g} s: only its first {self.max_seconds:g} s were heard (the "
                         "cap: --max-seconds, or generate.max_seconds in params.yaml)")
        if samples < encoder.min_samples:
            notes.append(f"{seconds:.2f} s is shorter than one {encoder.min_samples / encoder.sample_rate:.3f} s "
                         f"{WINDOW_NAMES[encoder.kind]}: padded to fill one, as in training")
        elif (unheard := encoder.unheard(samples) / encoder.sample_rate) >= UNHEARD_NOTE_SECONDS:
            notes.append(f"its last {unheard:.2f} s were not heard: less than half a {WINDOW_NAMES[encoder.kind]} "
                         "past the last whole one, which the window rule drops (as the encoder's own extractor drops "
                         "what lies past its window)")
        return Heard(frames, seconds, notes)

    def sound(self, path: Path, layering: LayersParams | None = None, heard: Heard | None = None) -> Sound:
        """One file heard (``hear``, unless ``heard`` already) and mapped, with the top-3 nearest prompts; given
        ``layering``, with the sounds it holds as layers, each placed. With a stereo layout, a file whose channels
        cancel in a mono mix (opposite phase) is heard from its channels."""
        try:
            heard = heard or self.hear(path)
        except A2IError as err:
            if layering is None or layering.layout != "stereo" or "silent" not in str(err):
                raise
            heard = self._hear_from_channels(path)
        pooled, tokens = predict_clips(self.artifact.mapper, [heard.frames])  # (1, P), (1, N, D) or None
        sound = Sound(path, pooled[0], None if tokens is None else tokens[0], self.artifact.nearest_prompts(pooled)[0],
                      notes=heard.notes)
        if layering is not None:
            score = scorer(self.artifact, layering.answer, self.head)
            sound.layers, notes = find_layers(self, score, path, heard.frames, layering)
            sound.notes += notes
        return sound

    def _hear_from_channels(self, path: Path) -> Heard:
        """A file silent as a mono mix, heard from its two channels as one clip (their windows together);
        A2IError when they are silent too."""
        stereo = hear_channels(self.hear, path)
        frames = [f for f, _ in stereo.channels() if len(f)]
        if not stereo.opposite_phase or not frames:
            raise A2IError(f"{path}: silent (RMS below -80 dBFS): there is nothing to hear")
        return Heard(np.concatenate(frames), stereo.seconds, [*stereo.heard_notes, *stereo.notes])

    def sounds(self, paths: list[Path], layering: LayersParams | None = None) -> list[Sound]:
        """Every file as a Sound; one A2IError naming every file that cannot be heard."""
        sounds, problems = [], []
        for path in paths:
            try:
                sounds.append(self.sound(path, layering))
            except A2IError as err:
                problems.append(str(err))
        if problems:
            raise A2IError("; ".join(problems))
        return sounds

    def render(self, sounds: list[Sound], settings: RenderSettings, images_per_sound: int,
               fill: SequenceFill, layering: LayersParams | None = None) -> float:
        """Fill each Sound's images, with the seeds of ``image_seeds(settings.seed, images_per_sound)`` and the
        sequence positions the mapper does not predict filled by ``fill``; a Sound of several layers is drawn as
        ``layering`` says. A Sound of one layer is drawn as without layers, in the batches of the other such Sounds:
        its image is the one a run without layers makes when the same Sounds share its batches (a batch's make-up
        can move a pixel by a rounding step). Returns seconds."""
        artifact = self.artifact
        fills = fill.rows(np.stack([s.pooled for s in sounds]), artifact.empty_sequence, artifact.prompt_pooled,
                          artifact.prompt_sequences)  # sound i's (L, D) fill
        seeds = image_seeds(settings.seed, images_per_sound)
        layered = [i for i, s in enumerate(sounds) if len(s.layers) > 1]
        plan = [(i, seed) for i in range(len(sounds)) if i not in layered for seed in seeds]

        def sequences(indices: list[int]) -> np.ndarray:
            return np.stack([fill_sequence(fills(plan[j][0]), sounds[plan[j][0]].tokens) for j in indices])

        start = time.monotonic()
        if plan:
            pooled = np.stack([sounds[i].pooled for i, _ in plan]).astype(np.float32)
            for j, image in render(self.pipe, pooled, sequences, artifact.empty_pooled, artifact.empty_sequence,
                                   settings, self.device, self.dtype, seeds=[seed for _, seed in plan]):
                sounds[plan[j][0]].images.append(image)
        if layered and layering is None:
            raise ValueError("sounds with layers need the layering they were found with")
        for i in layered:
            sound = sounds[i]
            own = fill_sequence(fills(i), sound.tokens)  # (L, D)
            conds = conditioning(artifact, sound.layers, sound.pooled, own, bank_fill(artifact, fill))
            for seed in seeds:
                sound.images.append(draw(self, Layered(sound.layers, conds), layering, settings, seed))
        return time.monotonic() - start


class DecodeProgress:
    """``embed_path``'s progress callback: every ``every`` seconds, a log line with the seconds decoded of the total
    (what the header claims, up to the cap, when it claims anything), the speed and the time left. Files done
    sooner print nothing, and pay for no header read."""

    def __init__(self, path: Path, sample_rate: int, max_samples: int | None, every: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.sample_rate, self.every, self.clock = path, sample_rate, every, clock
        self.cap = None if max_samples is None else max_samples / sample_rate
        self.start = clock()
        self.due = self.start + every
        self.header_read = False
        self.seconds: float | None = None  # the total to decode, when the header claims one
        self.total = ""  # the same, as the line says it

    def __call__(self, samples: int) -> None:
        now = self.clock()
        if now < self.due:
            return
        self.due = now + self.every
        if not self.header_read:
            self.header_read = True
            self._read_header()
        done = samples / self.sample_rate
        speed = done / max(now - self.start, 1e-9)
        if self.seconds is not None and self.seconds > done:
            log.info("%s: %s of %s decoded (%.3gx real time), about %s left", self.path, duration_text(done),
                     self.total, speed, duration_text((self.seconds - done) / speed))
        else:
            log.info("%s: %s decoded (%.3gx real time)", self.path, duration_text(done), speed)

    def _read_header(self) -> None:
        claimed = claimed_seconds(self.path)
        if claimed is None:
            return
        if self.cap is not None and claimed > self.cap:
            self.seconds = self.cap
            self.total = f"{duration_text(self.cap)} (the cap; its header claims {duration_text(claimed)})"
        else:
            self.seconds = claimed
            self.total = duration_text(claimed)


def duration_text(seconds: float) -> str:
    """A duration as a person reads it: 42 s, 3 min 05 s, 2 h 03 min."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def expand_inputs(paths: list[Path]) -> tuple[list[tuple[Path, str]], list[str]]:
    """Files to render, each with the name its images take (a directory's files keep their path inside it), and
    one problem line per argument that is neither an audio file nor a directory holding some, and per audio name
    in a directory that is not a file (a named pipe, a device, a broken link): each named for what it is, none
    opened."""
    inputs, problems = [], []
    for path in paths:
        if os.path.isdir(path):  # False, not an error, for a link loop or a path it may not search
            found, odd = [], []
            for p in sorted(path.rglob("*")):
                if p.suffix.lower() not in AUDIO_SUFFIXES or os.path.isdir(p):
                    continue
                problem = not_a_file(p)
                if problem is None:
                    found.append(p)
                else:
                    odd.append(f"{p}: {problem}")
            problems += odd
            if not found and not odd:
                problems.append(f"{path}: a directory with no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            inputs += [(p, p.relative_to(path).with_suffix("").as_posix()) for p in found]
        else:
            problem = not_a_file(path)
            if problem is None:
                inputs.append((path, path.stem))
            else:
                problems.append(f"{path}: {problem}")
    return inputs, problems


def output_names(names: list[str], images_per_sound: int) -> list[list[str]]:
    """PNG names for each input's images, all distinct: a repeated name gets -2, -3, ... (two files called s.ogg in
    different folders must not overwrite each other)."""
    taken: set[str] = set()
    result = []
    for name in names:
        base, n = name, 1
        while True:
            files = [f"{base}.png"] if images_per_sound == 1 else [f"{base}-{k}.png" for k in range(images_per_sound)]
            if not taken.intersection(files):
                break
            n += 1
            base = f"{name}-{n}"
        taken.update(files)
        result.append(files)
    return result
