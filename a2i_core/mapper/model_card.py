"""The trained mapper's model card: ``README.md`` in the Hugging Face Hub's format, written with the mapper.

YAML metadata (library, tags, licence, the SD3 model it conditions, the dataset when it is a public one), then what
the mapper is, the data it learnt from, how it was trained, what its inputs must be made with, whose terms its weights
follow, and how to load it. Labels, prompts, source names and paths come from users' data: the metadata is written by
a safe YAML dumper from checked values only, and every such string in the Markdown is escaped and cut to a length, so
none can start a heading, a link (a bare URL, which the Hub's Markdown turns into one, included), an HTML tag or a
table cell. The card holds no timestamp: a rerun that trains the same mapper writes
the same bytes, and DVC sees no change.
"""

from __future__ import annotations

import html
import io
import re
import unicodedata
from dataclasses import dataclass

import pandas as pd
from ruamel.yaml import YAML

from a2i_core.core.candidates import HELDOUT, SPLITS
from a2i_core.core.hub import TINY, parse_hub_id
from a2i_core.core.params import TrainParams
from a2i_core.core.provenance import ENCODER_NAMES, encoder_kind
from a2i_core.mapper.model import MapperConfig

LIBRARY = "a2i"
# The weights' terms follow from their training data and the diffusion model, not from a2i's Apache-2.0 code: no
# licence on the Hub's list fits every mapper, so "other", named, and explained in the card's Licence section. (No
# license_link: it would point at a LICENSE file or URL, and the terms differ per mapper; the section is in the card.)
LICENSE = "other"
LICENSE_NAME = "a2i-mapper"
CODE_LICENSE = "Apache-2.0"
TAGS = ["audio-to-image", "stable-diffusion-3", "a2i"]  # and the audio encoder's kind

# The Hub lists the mapper among SD3's adapters: it steers the unchanged model, it is no finetune of it.
BASE_MODEL_RELATION = "adapter"
# The Hub copies of the public sources a2i reads (it reads the originals: these link the card to the data). The
# folder and synthetic sources are no Hub dataset, so a card for them names none. No pipeline_tag: the Hub has no
# audio-to-image task, and a wrong one would file the mapper under a task it does not do.
HUB_DATASETS = {"audioset": "agkphysics/AudioSet", "esc50": "ashraq/esc50", "audiocaps": "d0rj/audiocaps",
                "vggsound": "Loie/VGGSound"}
MAX_LABELS = 50  # rows of the labels table (AudioCaps has a "label" per caption: tens of thousands)
MAX_TEXT = 120  # characters of one label, prompt or name shown
# Inline Markdown syntax, a table's cell separator and the Hub's $ math; every value sits inside a line (after a fixed
# prefix, or in a table cell), where block syntax (#, -, 1.) cannot start. Autolinks too: GFM and linkify link bare
# "https://...", "www.x.y", "x.com" and "a@b.c" in text; an escaped character is a text node of its own, so with every
# ".", ":" and the second "/" of "//" escaped no run of text holds a scheme, a dotted domain or "//host" to link.
_MARKDOWN = re.compile(r"([\\`*_\[\]|~$.:]|(?<=/)/)")
# What the training data's terms are, per source: the weights learnt from it.
_DATA_TERMS = {
    "esc50": "ESC-50 (K. J. Piczak), licensed CC BY-NC 3.0: **non-commercial use only**. Treat weights trained on "
             "it as non-commercial too, and credit the dataset.",
    "audioset": "AudioSet (Google): its labels, ontology and released embeddings are licensed CC BY 4.0 (credit "
                "required); its audio is YouTube's videos, each under its uploader's terms and YouTube's.",
    "audiocaps": "AudioCaps: its captions are under the terms of the AudioCaps release; its audio is AudioSet's "
                 "YouTube videos, each under its uploader's terms and YouTube's (AudioSet's labels are CC BY 4.0).",
    "vggsound": "VGGSound (Oxford VGG): its clip list and labels are licensed CC BY 4.0 (credit required); its "
                "audio is YouTube's videos, each under its uploader's terms and YouTube's.",
    "folder": "a folder of sounds chosen by whoever trained the mapper: a2i cannot know their terms. Whoever shares "
              "the mapper must state them.",
    "synthetic": "sounds a2i synthesises from a seed: no third-party data.",
}


@dataclass(frozen=True)
class DataSummary:
    """What the mapper learnt from: the data source and, per label, its (clip, label) pairs in each split."""

    source: str
    clips: int
    prompts: int
    pairs_per_label: dict[str, dict[str, int]]  # label -> split -> pairs

    @classmethod
    def of(cls, frame: pd.DataFrame, source: str) -> DataSummary:
        """From the training pairs (clip_id, label, prompt, split; one row per pair) and the source's name."""
        counts = frame.groupby(["label", "split"]).size()
        per_label: dict[str, dict[str, int]] = {}
        for (label, split), n in counts.items():
            per_label.setdefault(str(label), {})[str(split)] = int(n)
        return cls(source, int(frame["clip_id"].nunique()), int(frame["prompt"].nunique()), per_label)

    @property
    def pairs_per_split(self) -> dict[str, int]:
        return {s: sum(splits.get(s, 0) for splits in self.pairs_per_label.values()) for s in SPLITS}


@dataclass(frozen=True)
class TrainingSummary:
    """How the mapper was trained (its architecture is in its config) and how it ended."""

    train: TrainParams
    best_epoch: int
    stopped_epoch: int
    best_val_loss: float
    best_val_cosine: float


def model_card(config: MapperConfig, data: DataSummary, training: TrainingSummary) -> str:
    """The mapper folder's README.md: Hub metadata, then the card in Markdown."""
    sections = [_intro(config), _data(data), _training(config, training), _provenance(config), _licence(config, data),
                _usage()]
    return f"---\n{front_matter(config, data)}---\n\n" + "\n\n".join(sections) + "\n"


def front_matter(config: MapperConfig, data: DataSummary) -> str:
    """The card's YAML metadata: only fixed values and checked ids, written by a safe dumper."""
    tags = [*TAGS[:2], encoder_kind(config.provenance.frontend), TAGS[2]]
    meta: dict = {"library_name": LIBRARY, "license": LICENSE, "license_name": LICENSE_NAME, "tags": tags}
    base = base_model(config.provenance.diffusion_model)
    if base is not None:
        meta.update(base_model=base, base_model_relation=BASE_MODEL_RELATION)
    if data.source in HUB_DATASETS:
        meta["datasets"] = [HUB_DATASETS[data.source]]
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(meta, out)
    return out.getvalue()


def base_model(diffusion_model: str) -> str | None:
    """The Hub id of the diffusion model the mapper was trained for ("id@revision" in its provenance); None for the
    tiny offline model or a local directory, which the Hub cannot link to."""
    if diffusion_model == TINY:
        return None
    parsed = parse_hub_id(diffusion_model)
    return None if parsed is None else parsed[0]


def md(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` as literal inline Markdown: on one line, at most ``limit`` characters, with every character that
    Markdown, HTML or a table would read as syntax escaped, and no URL, domain or e-mail address left to autolink."""
    text = "".join(_visible(c) for c in str(text)).strip()
    text = re.sub(r"\s+", " ", text)
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return html.escape(_MARKDOWN.sub(r"\\\1", text), quote=False)


def _visible(char: str) -> str:
    category = unicodedata.category(char)
    if category in ("Cc", "Zl", "Zp"):  # newlines, tabs, other controls: they would end a line or a table row
        return " "
    if category == "Cs":  # a lone surrogate cannot be written as UTF-8
        return "\ufffd"
    return char


def _intro(config: MapperConfig) -> str:
    tokens = (f" and the first {config.tokens} tokens of its {config.token_width}-wide sequence embedding"
              if config.tokens else "")
    kind = encoder_kind(config.provenance.frontend)
    encoder = ENCODER_NAMES[kind]
    window = {"vggish": "0.96 s", "clap": "10 s", "ast": "10.24 s"}[kind]
    what = f"per-{window} frames" if config.input == "frames" else "mean over the clip"
    return f"""# a2i mapper: sound to Stable Diffusion 3

A small network that maps a sound's {encoder} audio embedding ({config.in_dim}-D, {what}) onto Stable Diffusion 3's
pooled text embedding ({config.pooled_dim}-D){tokens}, so that a frozen SD3 draws a picture of the sound. The train
stage of an a2i pipeline (`dvc repro`) wrote this folder and this card.

The folder holds the mapper (`model.safetensors`, `config.json`), the empty-prompt embeddings used for guidance
(`guidance.safetensors`) and the prompt bank (`prompts.json`, `prompt_bank.safetensors`) that names the prompts
closest to a prediction. SD3 is not included: it is used unchanged, under its own licence."""


def _data(data: DataSummary) -> str:
    per_split = data.pairs_per_split
    splits = [s for s in SPLITS if s != HELDOUT or per_split[s]]
    lines = ["## Data", "",
             f"- Source: {md(data.source)}",
             f"- Clips: {data.clips:,}; labels: {len(data.pairs_per_label):,}; prompts: {data.prompts:,}",
             "- (clip, label) pairs per split: " + ", ".join(f"{s} {per_split[s]:,}" for s in splits)]
    if per_split[HELDOUT]:
        lines.append("- The heldout split's labels were never trained on: they measure generalisation.")
    return "\n".join(lines + ["", _labels_table(data, splits)])


def _labels_table(data: DataSummary, splits: list[str]) -> str:
    # Most pairs first, then by name: the same order on every run.
    ranked = sorted(data.pairs_per_label.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    shown = ranked[:MAX_LABELS]
    heading = f"Pairs per label ({len(shown)} of {len(ranked)}, most pairs first):" if len(ranked) > len(shown) \
        else "Pairs per label:"
    rows = [heading, "", "| label | " + " | ".join(splits) + " |", "| --- |" + " ---: |" * len(splits)]
    rows += [f"| {md(label)} | " + " | ".join(f"{counts.get(s, 0):,}" for s in splits) + " |"
             for label, counts in shown]
    return "\n".join(rows)


def _training(config: MapperConfig, training: TrainingSummary) -> str:
    train = training.train
    target = f"pooled + first {config.tokens} sequence tokens" if config.tokens else "pooled"
    rows = [("target", target), ("input", config.input), ("hidden layers", _list(config.hidden)),
            ("dropout", _list(config.dropout))]
    if config.input == "frames":
        rows += [("frame transformer", f"width {config.frames_width}, {config.frames_layers} layers, at most "
                                        f"{config.max_frames} frames")]
    rows += [("parameters", f"{sum(config.parameter_counts().values()):,}"),
             ("loss", f"{_num(train.w_cos)} × (1 − cosine) + {_num(train.w_mse)} × MSE"),
             ("optimiser", f"Adam, learning rate {_num(train.lr)}, batch size {train.batch_size}"),
             ("epochs", f"at most {train.epochs}, early stopping after {train.patience} without a better val loss"),
             ("seed", str(train.seed)),
             ("best epoch", f"{training.best_epoch} (stopped after {training.stopped_epoch})"),
             ("best val loss", f"{training.best_val_loss:.4f}"),
             ("best val cosine", f"{training.best_val_cosine:.4f}")]
    return "## Training\n\n" + _table(("setting", "value"), rows)


def _provenance(config: MapperConfig) -> str:
    p = config.provenance
    sha256 = f"`{p.encoder_sha256}`" if re.fullmatch("[0-9a-f]{64}", p.encoder_sha256) else md(p.encoder_sha256)
    rows = [(f"audio encoder ({ENCODER_NAMES[encoder_kind(p.frontend)]}) sha256", sha256),
            ("postprocess (PCA, 8-bit)", "yes" if p.postprocess else "no"),
            ("frontend", md(p.frontend, 300)),
            ("diffusion model", md(p.diffusion_model, 300)),
            ("sequence embedding", f"{p.sequence_shape[0]} × {p.sequence_shape[1]}")]
    note = ("\n\nIt learnt from AudioSet's released embeddings; new sounds are embedded by the local torch port of "
            "VGGish with the same PCA: close, not identical." if p.from_release else "")
    return ("## Provenance\n\nThe mapper fits only features made the way its training features were; a2i refuses "
            "another audio encoder, postprocess setting, frontend or SD3, naming the field.\n\n"
            + _table(("field", "value"), rows) + note)


def _licence(config: MapperConfig, data: DataSummary) -> str:
    model = config.provenance.diffusion_model
    base = base_model(model)
    if model == TINY:
        diffusion = "a2i's tiny offline model, randomly initialised: no third-party weights."
    elif base is not None:
        diffusion = (f"{md(base)}, under its own licence (on its Hub page), which also governs the images it draws "
                     "with this mapper.")
    else:
        diffusion = (f"the local model {md(model, 300)}, under the licence of the model saved there, which also "
                     "governs the images it draws with this mapper.")
    terms = _DATA_TERMS.get(data.source, f"{md(data.source)}: see its terms.")
    return f"""## Licence

These weights are not under a2i's licence: their terms follow from the data they learnt from and from the licence of
the diffusion model whose text embeddings they were trained to predict (hence `license: {LICENSE}` in the metadata).

- Training data: {terms}
- Diffusion model: {diffusion}
- a2i's code, which trained the mapper and loads it, is licensed {CODE_LICENSE}; that licence does not cover these
  weights."""


def _usage() -> str:
    return """## How to use

With a2i installed, from a project whose audio_encoder and encoders stages made the audio encoder and SD3 named
under Provenance (`models/audio_encoder`, `models/sd3`; or pass `--audio-encoder` and `--sd3`):

```bash
a2i generate sound.wav --mapper <this folder or owner/name[@revision]> --out images
```

From Python:

```python
from pathlib import Path

from a2i_core.serve.generate import SoundToImage, pick_device
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.render import RenderSettings

generator = SoundToImage.from_pretrained("owner/name", "models/audio_encoder", "models/sd3", pick_device("auto"))
sounds = generator.sounds([Path("sound.wav")])
settings = RenderSettings(steps=28, guidance=7.0, size=1024, seed=0, batch_size=1)
# The sequence the mapper does not predict: the empty prompt's, or SequenceFill("nearest_prompts", k=3,
# temperature=0.05), a mix of the closest prompts' sequences (when this folder has prompt_sequences.safetensors).
generator.render(sounds, settings, images_per_sound=1, fill=SequenceFill("empty_prompt"))
sounds[0].images[0].save("sound.png")
print(sounds[0].nearest)  # the prompts closest to what the mapper heard, with their cosine
```

A folder wins over a Hub id of the same name, and a path (`./x`, `/x`, `~/x`, or `a/b` where `a/` is a folder) is
never looked up on the Hub; `owner/name@revision` pins a branch, tag or commit."""


def _table(header: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    return "\n".join(lines + [f"| {name} | {value} |" for name, value in rows])


def _list(values: list) -> str:
    return ", ".join(_num(v) for v in values)


def _num(value: float) -> str:
    """A number as params.yaml would hold it: 0.0001, 3, 0.7 (no float noise: the card must not change by itself)."""
    return repr(value) if isinstance(value, int) else f"{value:g}"
