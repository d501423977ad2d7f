"""train: fit the mapper on the train split, early-stopped on val -> the mapper artifact (with its model card), its
metrics and curves."""

from __future__ import annotations

from pathlib import Path

from dvclive import Live

from a2i_core.core import shards
from a2i_core.core.candidates import CANDIDATES_KIND
from a2i_core.core.charts import line_chart, write_chart
from a2i_core.core.devices import resolve_device
from a2i_core.core.errors import A2IError
from a2i_core.core.files import write_json
from a2i_core.core.params import MapperParams, TrainParams
from a2i_core.core.provenance import Provenance
from a2i_core.diffusion.prompt_embeddings import load_guidance, load_sequences
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.mapper.model_card import DataSummary, TrainingSummary, model_card
from a2i_core.mapper.pairs import load_pairs
from a2i_core.mapper.train import Split, mapper_config, train_mapper


def train(mapper: MapperParams, params: TrainParams, candidates: Path, audio_features: Path, text_features: Path,
          out: Path, metrics: Path, curves: Path, curves_chart: Path) -> dict:
    with_tokens = mapper.target == "pooled+tokens"
    pairs = load_pairs(candidates, audio_features, text_features, frames=mapper.input == "frames",
                       tokens=with_tokens, max_frames=mapper.max_frames)
    device = resolve_device(params.device)
    # Indexed, not copied per pair: the splits share the clip features and the unique prompts' targets.
    data = Split.of(pairs, mapper.input, with_tokens, device)
    split = pairs.frame["split"].to_numpy()
    train_data, val_data = data.rows(split == "train"), data.rows(split == "val")
    for name, part in (("train", train_data), ("val", val_data)):
        if not len(part):
            raise A2IError(f"no {name} pairs: too few clips for data.val_fraction and data.test_fraction")
    config = mapper_config(mapper, pairs.clip_audio.shape[1], pairs.prompt_pooled.shape[1],
                           pairs.prompt_tokens.shape[1:] if with_tokens else None,
                           Provenance.from_parts(pairs.provenance))
    live = Live(str(curves), dvcyaml=None, save_dvc_exp=False, report=None)

    def log_epoch(record: dict) -> None:
        for key in ("train_loss", "val_loss", "val_cosine"):
            live.log_metric(key, record[key])
        live.next_step()

    result = train_mapper(train_data, val_data, config, params, on_epoch=log_epoch)
    live.end()
    empty_pooled, empty_sequence = load_guidance(text_features)
    best = result.history[result.best_epoch - 1]
    card = model_card(config, DataSummary.of(pairs.frame, _source(candidates)),
                      TrainingSummary(params, result.best_epoch, result.stopped_epoch, best["val_loss"],
                                      best["val_cosine"]))
    # The bank's sequences (None unless diffusion.store_sequence) make render.sequence_fill nearest_prompts possible.
    sequences = load_sequences(text_features, pairs.prompts)  # (K, L, D)
    MapperArtifact(result.model, empty_pooled, empty_sequence, pairs.prompts, pairs.prompt_pooled,
                   sequences).save(out, card)
    report = {"train_pairs": len(train_data), "val_pairs": len(val_data),
              "best_epoch": result.best_epoch, "stopped_epoch": result.stopped_epoch,
              "best_val_loss": best["val_loss"], "best_val_cosine": best["val_cosine"],
              "seconds": round(result.seconds, 2)}
    write_json(metrics, report)
    losses = {key: [(record["epoch"], record[key]) for record in result.history] for key in ("train_loss", "val_loss")}
    write_chart(curves_chart, line_chart(losses, "Training curves", "epoch", "loss"))
    return report


def _source(candidates: Path) -> str:
    """The data source the candidates came from (one per table), for the model card."""
    sources = shards.read_table(candidates, CANDIDATES_KIND, columns=["source"]).column("source").unique().to_pylist()
    return ", ".join(sorted(str(s) for s in sources)) or "none"
