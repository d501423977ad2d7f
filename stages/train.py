"""train: fit the mapper on the train split, early-stopped on val -> models/mapper/, metrics/train.json."""

import pandas as pd

from a2i_core.devices import resolve_device
from a2i_core.encoders import sd3_source
from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.files import atomic_path, write_json
from a2i_core.pairs import load_pairs
from a2i_core.params import load_params
from a2i_core.train import train_mapper


@exit_cleanly
def main() -> None:
    setup_logging()
    params = load_params()
    pairs = load_pairs("data/candidates.parquet", "data/features/audio", "data/features/text")
    train, val = pairs.split("train"), pairs.split("val")
    provenance = {**pairs.audio_meta, "diffusion_model": sd3_source("models/sd3")[0]}
    result = train_mapper(train.audio, train.target, val.audio, val.target, params.mapper, params.train,
                          resolve_device(params.train.device), provenance)
    result.model.save_pretrained("models/mapper")
    with atomic_path("metrics/train_curve.csv") as tmp:
        pd.DataFrame(result.history).to_csv(tmp, index=False)
    best = result.history[result.best_epoch - 1]
    write_json("metrics/train.json", {
        "train_pairs": len(train.frame), "val_pairs": len(val.frame), "best_epoch": result.best_epoch,
        "stopped_epoch": result.stopped_epoch, "best_val_loss": best["val_loss"],
        "best_val_cosine": best["val_cosine"], "seconds": round(result.seconds, 2)})


if __name__ == "__main__":
    main()
