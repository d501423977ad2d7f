"""params.yaml as one validated, typed object.

Every stage reads its settings from here and nowhere else. Loading fails with one line that names the
offending key: an unknown key, a missing key, a value of the wrong type or out of range.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML

from a2i_core.core.typed import ParamsError, check, typed_from_dict

__all__ = ["ParamsError", "check", "typed_from_dict"]  # re-exported: every reader of params meets them here

# Upper bounds, stated once. Each is far above any real use and far below what takes the machine: a value past one is
# a typo or an attack, and stops `check_params` (the first stage) before any model loads or any clip downloads.
MAX_SEED = 2**32 - 1  # numpy's legacy RandomState and most tools take 32-bit seeds; image k adds k to it
MAX_IMAGE_SIZE = 4096  # pixels a side: SD3 Medium is trained at 1024; 4096 already needs 16 times its activations
MAX_STEPS = 1000  # SD3's flow-matching schedule has 1000 training steps; samplers need 28 to 50
MAX_GUIDANCE = 100.0  # classifier-free guidance: 3 to 10 in practice; far past it the images saturate to noise
MAX_BATCH = 65_536  # any batch: audio windows, prompts, training pairs, images
MAX_WIDTH = 65_536  # a mapper layer's width (SD3's pooled embedding is 2048 wide)
MAX_LAYERS = 64  # a mapper's hidden layers, or its frame transformer's
MAX_FRAMES = 4096  # 0.96 s frames a clip's transformer reads: over an hour
MAX_COUNT = 1_000_000  # counts of work: epochs, patience, clips or pairs per class, nearest prompts, attempts
MAX_WORKERS = 256  # processes or threads on one machine
MAX_SHARD_ROWS = 10_000_000  # rows in one Parquet shard
MAX_SECONDS = 86_400.0  # any duration: a day
MAX_FPS = 60.0  # a film's frames per second: every frame is a whole diffusion run, so more is only cost
MAX_FILM_FRAMES = 216_000  # an hour at 60 frames/s: a film's frames are counted before any is drawn
MAX_SOUND_LAYERS = 16  # sounds drawn in one image: each is a transformer pass per step (regions)
MAX_LEVEL_DB = 60.0  # a level ratio between two sounds, either way: past it one of them is inaudible


def check_at_most(value: float, high: float, key: str, low: float = 0) -> None:
    """``low <= value <= high``, or one line naming the key and the bound (bounds live in the constants above)."""
    check(low <= value <= high, key, f"must be in [{low:,}, {high:,}], got {value:,}")


@dataclass(frozen=True)
class SyntheticParams:
    classes: list[str]
    clips_per_class: int
    min_seconds: float
    max_seconds: float

    def __post_init__(self) -> None:
        # Class names are checked by the synthetic source itself (ingest): params knows nothing of sources.
        check(len(self.classes) >= 2, "classes", "needs at least 2 classes")
        check(len(set(self.classes)) == len(self.classes), "classes", "lists a class twice")
        check(self.clips_per_class >= 3, "clips_per_class", "must be >= 3 (train, val and test need clips)")
        check_at_most(self.clips_per_class, MAX_COUNT, "clips_per_class")
        check(0.1 <= self.min_seconds <= self.max_seconds, "min_seconds", "must be >= 0.1 and <= max_seconds")
        check(self.max_seconds <= 30, "max_seconds", "must be <= 30")


@dataclass(frozen=True)
class AudiosetParams:
    segments: list[str]  # segment CSVs: URLs or local paths (balanced_train_segments.csv, eval_segments.csv, ...)
    class_labels: str  # class_labels_indices.csv
    qa_counts: str  # qa_true_counts.csv
    ontology: str  # ontology.json
    min_label_quality: float  # num_true / num_rated
    excluded_restrictions: list[str]  # ontology restrictions that drop a label
    include: list[str]  # mids or display names; empty keeps all
    exclude: list[str]
    max_pairs_per_class: int  # 0: no cap

    def __post_init__(self) -> None:
        check(len(self.segments) >= 1, "segments", "needs at least one segment file")
        check(0 <= self.min_label_quality <= 1, "min_label_quality", "must be in [0, 1]")
        check_at_most(self.max_pairs_per_class, MAX_COUNT, "max_pairs_per_class")


@dataclass(frozen=True)
class Esc50Params:
    root: str  # a local copy (meta/esc50.csv, audio/) or the official archive's URL (.zip)


@dataclass(frozen=True)
class AudiocapsParams:
    csv: list[str]  # audiocap_id,youtube_id,start_time,caption files: URLs or local paths


@dataclass(frozen=True)
class VggsoundParams:
    csv: str  # VGGSound's published vggsound.csv (youtube_id,start_seconds,label,split; no header): a URL or a path
    split: Literal["test", "train", "all"]  # which of its rows: papers report on its test split


@dataclass(frozen=True)
class FolderParams:
    root: str  # any directory of audio files
    labels_csv: str | None = None  # file,label rows; without it, labels are the files' subfolder names


@dataclass(frozen=True)
class ArchiveParams:
    """Caps on what an archive a source ships as (ESC-50's zip) may expand to: a zip bomb stops at them."""

    max_mb: int  # total size of the extracted files
    max_files: int

    def __post_init__(self) -> None:
        check_at_most(self.max_mb, 100_000_000, "max_mb", low=1)  # 100 TB: AudioSet's whole audio is ~2 TB
        check_at_most(self.max_files, 100_000_000, "max_files", low=1)


@dataclass(frozen=True)
class DataParams:
    source: Literal["synthetic", "audioset", "esc50", "audiocaps", "vggsound", "folder"]
    prompt_template: str
    val_fraction: float
    test_fraction: float
    seed: int
    archives: ArchiveParams
    heldout_classes: list[str] = dataclasses.field(default_factory=list)  # labels kept out of training entirely: the
    # "heldout" split tests generalisation
    synthetic: SyntheticParams | None = None
    audioset: AudiosetParams | None = None
    esc50: Esc50Params | None = None
    audiocaps: AudiocapsParams | None = None
    vggsound: VggsoundParams | None = None
    folder: FolderParams | None = None

    def __post_init__(self) -> None:
        check("{name}" in self.prompt_template, "prompt_template", "must contain {name}")
        try:
            self.prompt_template.format(name="x")
        except (IndexError, KeyError, ValueError) as err:
            check(False, "prompt_template", f"{{name}} is its only field; write {{{{ and }}}} for braces ({err!r})")
        check(0 < self.val_fraction < 1, "val_fraction", "must be in (0, 1)")
        check(0 < self.test_fraction < 1, "test_fraction", "must be in (0, 1)")
        check(self.val_fraction + self.test_fraction < 1, "test_fraction", "val + test must leave a train split")
        check_at_most(self.seed, MAX_SEED, "seed")
        check(getattr(self, self.source) is not None, self.source, f"section required when source is {self.source!r}")


@dataclass(frozen=True)
class DownloadParams:
    url_template: str  # where a YouTube id's media is; tests point it at a local server
    workers: int
    max_attempts: int  # for retryable failures (HTTP 429, network), with exponential backoff and jitter
    backoff_seconds: float
    requests_per_second: float  # a global rate limit over all workers; 0 for none
    pack_size: int  # 0: one WAV file per clip; N: N clips per Parquet pack (for millions of clips)
    frames: bool = False  # also keep the source video's frame at each evaluated clip's midpoint (IIS, FID, KID)
    cookies: str | None = None  # a Netscape cookies file for yt-dlp

    def __post_init__(self) -> None:
        check_at_most(self.pack_size, MAX_SHARD_ROWS, "pack_size")
        check(self.cookies is None or self.cookies.strip() != "", "cookies", "must be a file's path, or null")
        check("{ytid}" in self.url_template, "url_template", "must contain {ytid}")
        check_at_most(self.workers, MAX_WORKERS, "workers", low=1)
        check_at_most(self.max_attempts, 100, "max_attempts", low=1)  # backoff doubles: 100 tries outlast any outage
        check_at_most(self.backoff_seconds, MAX_SECONDS, "backoff_seconds")
        check_at_most(self.requests_per_second, 10_000, "requests_per_second")


Device = str  # "auto", "cpu", "cuda", "cuda:1", ...
DType = Literal["auto", "float32", "float16", "bfloat16"]  # auto: bfloat16 on a GPU, float32 on the CPU


def check_device(device: str) -> None:
    check(device in ("auto", "cpu") or device.startswith("cuda") or device == "mps", "device",
           f"unknown device {device!r} (auto, cpu, cuda, cuda:N, mps)")


@dataclass(frozen=True)
class AudioEncoderParams:
    model: Literal["vggish", "clap", "ast"]
    weights: str  # vggish: "tiny", a URL or a local path to torchvggish's state dict
    postprocess: bool  # vggish only: AudioSet's PCA + 8-bit quantisation
    batch_size: int  # windows per forward pass (VGGish: 0.96 s examples; CLAP: 10 s, AST: 10.24 s)
    shard_rows: int
    decode_workers: int  # ffmpeg decodes running ahead of the network
    device: Device
    weights_sha256: str | None = None  # required for a URL
    pca: str | None = None  # only read when postprocess is true
    pca_sha256: str | None = None
    # AudioSet's released embeddings (a directory of its *.tfrecord files, searched recursively): with it, no audio is
    # downloaded and embed_audio imports these for the candidates' clips instead of running VGGish.
    release: str | None = None
    checkpoint: str | None = None  # clap, ast: "tiny", a Hub id (pinned by the audio_encoder stage) or a local folder

    def __post_init__(self) -> None:
        vggish = self.model == "vggish"
        check(vggish or self.checkpoint is not None, "checkpoint", f"required when model is {self.model}")
        check(not vggish or self.checkpoint is None, "checkpoint", "only read for model clap or ast (vggish reads "
              "weights)")
        check(vggish or not self.postprocess, "postprocess", "VGGish's PCA: only for model vggish (set it to false "
              f"for {self.model})")
        check(vggish or self.release is None, "release", "AudioSet's released embeddings are VGGish's: only for "
              "model vggish")
        check_at_most(self.batch_size, MAX_BATCH, "batch_size", low=1)
        check_at_most(self.shard_rows, MAX_SHARD_ROWS, "shard_rows", low=1)
        check_at_most(self.decode_workers, MAX_WORKERS, "decode_workers", low=1)
        check(not self.postprocess or self.pca is not None, "pca", "required when postprocess is true")
        for location_key, key in (("weights", "weights_sha256"), ("pca", "pca_sha256")):
            digest, location = getattr(self, key), getattr(self, location_key)
            check(digest is None or (8 <= len(digest) <= 64 and all(c in "0123456789abcdef" for c in digest)), key,
                   "must be a lowercase hex sha256 or a prefix of at least 8 digits")
            # Whoever can change what a URL serves could match a short prefix; a local file is the user's own. A URL
            # with no digest at all is trusted on first use: its digest is recorded then and pinned from then on.
            check(location is None or "://" not in location or digest is None or len(digest) == 64, key,
                   f"{location_key} is a URL: give its full sha256 (64 hex digits), or null to pin it on first use")
        check_device(self.device)


@dataclass(frozen=True)
class DiffusionParams:
    model: str  # "tiny", a Hub id or a local diffusers directory
    tokens: int  # first N sequence tokens stored per prompt
    max_sequence_length: int  # T5 tokens
    use_t5: bool  # false: T5 is never loaded and its part of the sequence is zeros, as in diffusers
    store_sequence: bool  # also store every prompt's whole sequence (large: 333 x 4096 float16 each for SD3)
    batch_size: int
    shard_rows: int
    device: Device
    dtype: DType

    def __post_init__(self) -> None:
        check(1 <= self.max_sequence_length <= 512, "max_sequence_length", "must be in [1, 512]")
        # SD3's sequence: CLIP's 77 tokens, then T5's max_sequence_length.
        check_at_most(self.tokens, 77 + self.max_sequence_length, "tokens", low=1)
        check_at_most(self.batch_size, MAX_BATCH, "batch_size", low=1)
        check_at_most(self.shard_rows, MAX_SHARD_ROWS, "shard_rows", low=1)
        check_device(self.device)


@dataclass(frozen=True)
class MapperParams:
    target: Literal["pooled", "pooled+tokens"]  # +tokens: also the first diffusion.tokens sequence tokens
    input: Literal["mean", "frames"]  # the clip's mean VGGish vector, or a small transformer over its frames
    hidden: list[int]
    dropout: list[float]
    frames_width: int  # the frame transformer's width (input: frames)
    frames_layers: int
    max_frames: int  # longer clips use their first max_frames frames (0.96 s each)

    def __post_init__(self) -> None:
        check(self.frames_width >= 8 and self.frames_width % 4 == 0, "frames_width", "must be a multiple of 4, >= 8")
        check_at_most(self.frames_width, MAX_WIDTH, "frames_width")
        check_at_most(self.frames_layers, MAX_LAYERS, "frames_layers", low=1)
        check_at_most(self.max_frames, MAX_FRAMES, "max_frames", low=1)
        check(1 <= len(self.hidden) <= MAX_LAYERS, "hidden", f"needs 1 to {MAX_LAYERS} layers")
        for i, width in enumerate(self.hidden):
            check_at_most(width, MAX_WIDTH, f"hidden[{i}]", low=1)
        check(len(self.dropout) == len(self.hidden), "dropout", "needs one value per hidden layer")
        check(all(0 <= p < 1 for p in self.dropout), "dropout", "values must be in [0, 1)")


@dataclass(frozen=True)
class TrainParams:
    lr: float
    batch_size: int
    epochs: int
    patience: int
    w_cos: float
    w_mse: float
    seed: int
    device: Device

    def __post_init__(self) -> None:
        check(self.lr > 0, "lr", "must be > 0")
        check_at_most(self.batch_size, MAX_BATCH, "batch_size", low=1)
        check_at_most(self.epochs, MAX_COUNT, "epochs", low=1)
        check_at_most(self.patience, MAX_COUNT, "patience", low=1)
        check_at_most(self.seed, MAX_SEED, "seed")
        check(self.w_cos >= 0 and self.w_mse >= 0 and self.w_cos + self.w_mse > 0, "w_cos",
               "loss weights must be >= 0 and not both 0")
        check_device(self.device)


@dataclass(frozen=True)
class RenderParams:
    clips_per_class: int
    steps: int
    guidance: float
    size: int
    seed: int
    batch_size: int
    sequence_fill: Literal["empty_prompt", "zeros", "nearest_prompts"]  # the positions the mapper does not predict
    nearest_k: int  # nearest_prompts: how many of the closest prompts are mixed
    nearest_temperature: float  # nearest_prompts: the softmax temperature over their cosines
    compile: bool  # torch.compile the transformer and VAE decoder (pays off for many images on a GPU)
    device: Device
    dtype: DType

    def __post_init__(self) -> None:
        check_at_most(self.clips_per_class, MAX_COUNT, "clips_per_class", low=1)
        check_at_most(self.steps, MAX_STEPS, "steps", low=1)
        check_at_most(self.guidance, MAX_GUIDANCE, "guidance")
        check(self.size % 16 == 0, "size", "must be a multiple of 16")
        check_at_most(self.size, MAX_IMAGE_SIZE, "size", low=16)
        check_at_most(self.seed, MAX_SEED, "seed")
        check_at_most(self.batch_size, MAX_BATCH, "batch_size", low=1)
        check_at_most(self.nearest_k, MAX_COUNT, "nearest_k", low=1)
        check(self.nearest_temperature > 0, "nearest_temperature", "must be > 0")
        check_device(self.device)


@dataclass(frozen=True)
class GenerateParams:
    """What `a2i generate` and the app read besides render's settings (no stage depends on them)."""

    max_seconds: float = 3600.0  # a longer recording is heard up to here, with a note (a header can claim hours)

    def __post_init__(self) -> None:
        check(0 < self.max_seconds <= MAX_SECONDS, "max_seconds", f"must be in (0, {MAX_SECONDS:,}]")


@dataclass(frozen=True)
class TimelineEvalParams:
    """The timeline stage's evaluation recordings: seeded concatenations of test clips with known boundaries."""

    recordings: int  # how many recordings are built
    events: int  # clips per recording (different classes, with some same-class neighbours, short events, gaps)
    short_seconds: float  # a short event: a clip cut to this length
    gap_seconds: float  # a silence gap between two clips
    seed: int
    films: int  # of the recordings, how many are drawn as a film (flicker is measured on them)

    def __post_init__(self) -> None:
        check_at_most(self.recordings, MAX_COUNT, "recordings", low=1)
        check_at_most(self.events, MAX_COUNT, "events", low=2)
        check(0 < self.short_seconds <= 30, "short_seconds", "must be in (0, 30]")
        check(0 < self.gap_seconds <= 30, "gap_seconds", "must be in (0, 30]")
        check_at_most(self.seed, MAX_SEED, "seed")
        check_at_most(self.films, self.recordings, "films")


@dataclass(frozen=True)
class TimelineParams:
    """A recording over time: per-window labels (`a2i timeline`, the app's timeline tab, the timeline stage), its
    storyboard and its film."""

    context: int  # windows each prediction hears, centred on its own (odd): 1 is each window alone
    temperature: float  # the softmax over the prompt bank's cosines that turns them into scores
    min_score: float  # a window whose best score is below this is "no event"
    silence_db: float  # a window quieter than this (dBFS) is "no event", whatever the mapper says
    switch_penalty: float  # the cost, in log-score, of changing label between two windows (smoothing)
    min_event_seconds: float  # a shorter event is merged into its neighbour
    fps: float  # the film's frames per second
    ease_seconds: float  # how long the conditioning takes to move from one event's keyframe to the next
    warm_strength: float  # 0: every frame from the fixed noise; else from the previous frame's latent, this noised
    max_frames: int  # a film of more frames is refused before any work (duration x fps)
    segment_seconds: float  # segment-based F1's segment length
    collar_seconds: float  # event-based F1's onset (and offset) collar
    eval: TimelineEvalParams

    def __post_init__(self) -> None:
        check(self.context % 2 == 1, "context", f"must be odd (centred on its window), got {self.context}")
        check_at_most(self.context, MAX_FRAMES, "context", low=1)
        check(0 < self.temperature <= 10, "temperature", f"must be in (0, 10], got {self.temperature}")
        check(0 <= self.min_score <= 1, "min_score", f"must be in [0, 1], got {self.min_score}")
        check(-200 <= self.silence_db <= 0, "silence_db", f"must be in [-200, 0] dBFS, got {self.silence_db}")
        check_at_most(self.switch_penalty, 1000.0, "switch_penalty")
        check_at_most(self.min_event_seconds, MAX_SECONDS, "min_event_seconds")
        check(0 < self.fps <= MAX_FPS, "fps", f"must be in (0, {MAX_FPS:g}], got {self.fps:g}")
        check_at_most(self.ease_seconds, MAX_SECONDS, "ease_seconds")
        check(0 <= self.warm_strength < 1, "warm_strength", f"must be in [0, 1), got {self.warm_strength}")
        check_at_most(self.max_frames, MAX_FILM_FRAMES, "max_frames", low=1)
        check(0 < self.segment_seconds <= 60, "segment_seconds", f"must be in (0, 60], got {self.segment_seconds}")
        check_at_most(self.collar_seconds, 60.0, "collar_seconds")


@dataclass(frozen=True)
class LabelHeadParams:
    """The label_head stage: a multi-label classifier over the prompt bank, trained on the training clips and on
    seeded two-source mixtures of them (each with both labels)."""

    mixtures: int  # two-source mixtures of training clips of different classes, besides the clips themselves
    min_db: float  # each mixture's second sound is this many dB (loudness, BS.1770) to max_db from the first
    max_db: float
    weight_decay: float  # L2 on the weights: keeps the probabilities from saturating, so thresholds mean something
    seed: int

    def __post_init__(self) -> None:
        check_at_most(self.mixtures, MAX_COUNT, "mixtures")
        check(-MAX_LEVEL_DB <= self.min_db <= self.max_db <= MAX_LEVEL_DB, "min_db",
              f"must be <= max_db, both in [-{MAX_LEVEL_DB:g}, {MAX_LEVEL_DB:g}] dB")
        check_at_most(self.weight_decay, 100.0, "weight_decay")
        check_at_most(self.seed, MAX_SEED, "seed")


@dataclass(frozen=True)
class MixturesParams:
    """The mixtures stage: seeded two-source mixtures of test clips of different classes, at each level ratio, and
    hard-panned stereo ones (the first sound left, the second right)."""

    per_level: int  # mixtures at each level ratio (and panned ones)
    levels_db: list[float]  # the second sound's loudness against the first's (BS.1770, pyloudnorm)
    seed: int

    def __post_init__(self) -> None:
        check_at_most(self.per_level, MAX_COUNT, "per_level", low=1)
        check(1 <= len(self.levels_db) <= 16, "levels_db", "needs 1 to 16 level ratios")
        for i, db in enumerate(self.levels_db):
            check(-MAX_LEVEL_DB <= db <= MAX_LEVEL_DB, f"levels_db[{i}]", f"must be in [-{MAX_LEVEL_DB:g}, "
                  f"{MAX_LEVEL_DB:g}] dB, got {db}")
        check_at_most(self.seed, MAX_SEED, "seed")


@dataclass(frozen=True)
class LayersParams:
    """Several sounds at once: which sounds a clip holds, and how each is drawn in one image (`a2i generate
    --layers`, the app, the render stage's layered row, the mixtures stage)."""

    answer: Literal["head", "nnls"]  # head: the label_head stage's classifier; nnls: the mapper's prediction
    # decomposed over the prompt bank (non-negative least squares)
    min_score: float  # a sound scoring less is not drawn (head: its probability; nnls: its share of the prediction)
    max_layers: int  # more sounds than this: the strongest are drawn, the rest named in a note
    mode: Literal["regions", "joint"]  # regions: each denoised under its own sound, blended per step; joint: one
    # text sequence holding each sound's, the pooled embedding their weighted mix
    layout: Literal["score", "grid", "stereo"]  # where each region goes: left to right by score, a grid, or where
    # the channels place the sound (mono and near-centre sounds: the middle)
    feather: float  # how soft the region borders are, as a fraction of the image side (0: hard)
    centre: float  # stereo: a sound panned less than this (0 centre .. 1 hard to one side) goes to the middle
    min_region: int  # pixels: the image must give each of max_layers regions this much of its width
    head: LabelHeadParams
    eval: MixturesParams

    def __post_init__(self) -> None:
        check(0 <= self.min_score <= 1, "min_score", f"must be in [0, 1], got {self.min_score}")
        check_at_most(self.max_layers, MAX_SOUND_LAYERS, "max_layers", low=1)
        check(0 <= self.feather <= 1, "feather", f"must be in [0, 1], got {self.feather}")
        check(0 <= self.centre < 1, "centre", f"must be in [0, 1), got {self.centre}")
        check_at_most(self.min_region, MAX_IMAGE_SIZE, "min_region", low=16)

    def room_problem(self, size: int, what: str = "render.size") -> str | None:
        """Why an image of ``size`` pixels cannot give each of max_layers regions min_region of its width, or None."""
        if size >= self.max_layers * self.min_region:
            return None
        return (f"{self.max_layers} regions of at least {self.min_region} px (layers.min_region) do not fit in "
                f"{what} {size} px")


@dataclass(frozen=True)
class EvalSetParams:
    """An extra evaluation set: its source, evaluated whole (ESC-50: per official fold)."""

    source: Literal["esc50", "audiocaps", "vggsound", "folder"]
    esc50: Esc50Params | None = None
    audiocaps: AudiocapsParams | None = None
    vggsound: VggsoundParams | None = None
    folder: FolderParams | None = None
    # The first N clips of each label drawn in every row (true prompt, the mapper with each fill, mean embedding) and
    # measured as image_eval measures the test clips (AIC, IIS, FID, ...); 0: the embeddings' metrics only.
    images_per_class: int = 0

    def __post_init__(self) -> None:
        check(getattr(self, self.source) is not None, self.source, f"section required when source is {self.source!r}")
        check_at_most(self.images_per_class, MAX_COUNT, "images_per_class")


@dataclass(frozen=True)
class EvaluateParams:
    clip_model: str  # scores rendered images against prompts: "tiny", a Hub id or a local directory
    device: Device
    # FID and KID's features: clip (clip_model's image embedding, FID_CLIP) or inception (the FID Inception of
    # TensorFlow's reference code as TorchScript: what papers report)
    fid_features: Literal["inception", "clip"] = "clip"
    inception: str | None = None  # the Inception TorchScript file: a local path, or a URL with inception_sha256
    inception_sha256: str | None = None
    fid_min_images: int = 2  # fewer generated images or frames: no FID (KID only, with a note)
    shuffle_seed: int = 0  # the shuffled-audio control's pairing of clips with other classes' sounds

    def __post_init__(self) -> None:
        check_device(self.device)
        check(self.fid_features != "inception" or bool(self.inception), "inception",
              "names the Inception file (a local path, or a URL with inception_sha256) when fid_features is inception")
        check(not (self.inception or "").startswith(("http://", "https://")) or self.inception_sha256 is not None,
              "inception_sha256", "is required for a URL in evaluate.inception (its full sha256)")
        check(self.inception_sha256 is None or re.fullmatch(r"[0-9a-f]{64}", self.inception_sha256) is not None,
              "inception_sha256", "must be 64 hex digits, or null")
        check_at_most(self.fid_min_images, MAX_COUNT, "fid_min_images", low=2)
        check_at_most(self.shuffle_seed, MAX_SEED, "shuffle_seed")


@dataclass(frozen=True)
class Params:
    # How dvc.yaml starts the stages that can spread over GPUs (embed_audio, embed_text, render):
    # "python", or e.g. "torchrun --standalone --nproc-per-node 8" for one process per GPU.
    launch: str
    data: DataParams
    download: DownloadParams
    audio_encoder: AudioEncoderParams
    diffusion: DiffusionParams
    mapper: MapperParams
    train: TrainParams
    evaluate: EvaluateParams
    render: RenderParams
    eval_sets: dict[str, EvalSetParams]  # name -> set; each is a stage eval_set@name
    timeline: TimelineParams
    layers: LayersParams
    generate: GenerateParams = dataclasses.field(default_factory=GenerateParams)  # params files before 0.2 lack it

    def __post_init__(self) -> None:
        for name in self.eval_sets:
            check(re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name) is not None, f"eval_sets.{name}",
                   "names are letters, digits, '_' or '-'")
        check(self.launch.split()[:1] in (["python"], ["python3"], ["torchrun"]), "launch",
               "must start with python or torchrun")
        problem = self.layers.room_problem(self.render.size)
        check(problem is None, "layers.max_layers", problem or "")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError naming the first bad key."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found (run from the project root, or pass the params file)")
    return params_from_dict(read_yaml(path), source=str(path))


def merge_overlay(base: Any, overlay: Any) -> Any:
    """``base`` with ``overlay``'s values in place of its own: mappings merge key by key, anything else replaces.

    A profile (``profiles/offline.yaml``) is such an overlay on ``params.yaml``: it holds only what differs. An empty
    mapping replaces (``eval_sets: {}`` drops the base's sets).
    """
    if not (isinstance(base, dict) and isinstance(overlay, dict)) or not overlay:
        return overlay
    merged = base.copy()
    for key, value in overlay.items():
        merged[key] = merge_overlay(base[key], value) if key in base else value
    return merged


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found")
    try:
        return YAML(typ="safe", pure=True).load(path.read_text())
    except Exception as err:  # ruamel raises many parser error types
        raise ParamsError(f"{path}: not valid YAML: {err}".splitlines()[0]) from None


def params_from_dict(raw: Any, source: str = "params") -> Params:
    return typed_from_dict(Params, raw, source)


def load_sections(path: str | Path, names: Sequence[str]) -> tuple[Any, str | None]:
    """Only the sections ``names`` of params.yaml, typed and checked by load_params' own rules and messages
    (``render.steps: must be ...``), for a reader that needs no others (`a2i generate` and the app read render and
    generate only); and load_params' one line on the rest of the file, or None when the whole file is valid.

    The sections come as one object with an attribute per name (``sections.render``); a section that params.yaml
    may leave out (generate) takes its default, as in :class:`Params`. A mistake elsewhere (``train.lr: fast`` left
    by a failed experiment) is the caller's to show as a note: it never stops such a reader.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found (run from the project root, or pass the params file)")
    raw = read_yaml(path)
    fields = {f.name: f for f in dataclasses.fields(Params)}
    unknown = [name for name in names if name not in fields]
    if unknown:
        raise ValueError(f"not sections of params.yaml: {', '.join(unknown)}")
    hints = typing.get_type_hints(Params)
    # A dataclass of just these fields, with Params' own types and defaults: the one loader then names keys by their
    # whole path and applies every rule, as it does for the whole file.
    chosen = dataclasses.make_dataclass(
        "Sections", [(name, hints[name], dataclasses.field(default=fields[name].default,
                                                             default_factory=fields[name].default_factory))
                     for name in names], frozen=True, kw_only=True)  # kw_only: any order
    given = {name: raw[name] for name in names if name in raw} if isinstance(raw, dict) else raw
    sections = typed_from_dict(chosen, given, str(path))
    try:
        params_from_dict(raw, source=str(path))
    except ParamsError as err:
        return sections, str(err)
    return sections, None
