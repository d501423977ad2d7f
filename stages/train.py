"""train: fit the mapper on the train split, early-stopped on val -> models/mapper/, metrics/train.json.

Per-epoch curves go through dvclive to metrics/train/ (`dvc plots show`).
"""

from dvclive import Live

from a2i_core.artifact import MapperArtifact
from a2i_core.devices import resolve_device
from a2i_core.encoders import sd3_source
from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.files import write_json
from a2i_core.pairs import load_pairs
from a2i_core.params import load_params
from a2i_core.text import load_guidance
from a2i_core.train import Split, mapper_config, train_mapper
from a2i_core.vggish import FRONTEND


@exit_cleanly
def main() -> None:
    setup_logging()
    params = load_params()
    cfg = params.mapper
    with_tokens = cfg.target == "pooled+tokens"
    pairs = load_pairs("data/candidates.parquet", "data/features/audio", "data/features/text",
                       frames=cfg.input == "frames", tokens=with_tokens, max_frames=cfg.max_frames)
    train, val = pairs.split("train"), pairs.split("val")
    device = resolve_device(params.train.device)
    empty_pooled, empty_sequence = load_guidance("data/features/text")
    provenance = {**pairs.audio_meta, "frontend": FRONTEND, "diffusion_model": sd3_source("models/sd3")[0],
                  "sequence_shape": "x".join(map(str, empty_sequence.shape))}
    config = mapper_config(cfg, pairs.audio.shape[1], pairs.pooled.shape[1],
                           pairs.tokens.shape[1:] if with_tokens else None, provenance)
    live = Live("metrics/train", dvcyaml=None, save_dvc_exp=False, report=None)

    def log_epoch(record: dict) -> None:
        for key in ("train_loss", "val_loss", "val_cosine"):
            live.log_metric(key, record[key])
        live.next_step()

    result = train_mapper(Split.of(*train.inputs(cfg.input), train.targets(with_tokens), device),
                          Split.of(*val.inputs(cfg.input), val.targets(with_tokens), device),
                          config, params.train, on_epoch=log_epoch)
    live.end()
    MapperArtifact(result.model, empty_pooled, empty_sequence, pairs.prompts,
                   pairs.prompt_pooled).save("models/mapper")
    best = result.history[result.best_epoch - 1]
    write_json("metrics/train.json", {
        "train_pairs": len(train.frame), "val_pairs": len(val.frame), "best_epoch": result.best_epoch,
        "stopped_epoch": result.stopped_epoch, "best_val_loss": best["val_loss"],
        "best_val_cosine": best["val_cosine"], "seconds": round(result.seconds, 2)})


if __name__ == "__main__":
    main()
