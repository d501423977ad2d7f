"""evaluate: the mapper on held-out pairs -> metrics/eval.json and metrics/eval_per_class.csv.

Reports the test split, the held-out-class split when data.heldout_classes is set, and a trivial baseline
(always the training set's mean embedding) beside the mapper.
"""

import numpy as np
import pandas as pd

from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.evaluate import evaluate_predictions, predict, token_metrics
from a2i_core.files import atomic_path, write_json
from a2i_core.ingest import HELDOUT
from a2i_core.mapper import AudioToSD3Mapper
from a2i_core.pairs import load_pairs
from a2i_core.params import load_params


@exit_cleanly
def main() -> None:
    setup_logging()
    params = load_params()
    w_cos, w_mse = params.train.w_cos, params.train.w_mse
    mapper = AudioToSD3Mapper.from_pretrained("models/mapper")
    pairs = load_pairs("data/candidates.parquet", "data/features/audio", "data/features/text",
                       frames=mapper.config.input == "frames", tokens=mapper.config.tokens > 0,
                       max_frames=mapper.config.max_frames)
    mapper.check_provenance(pairs.audio_meta, "data/features/audio")
    train_mean = pairs.split("train").pooled.mean(0, keepdims=True)

    report, tables = {}, []
    for split in ("test", HELDOUT):
        part = pairs.split(split)
        if not len(part.frame):
            continue
        pooled, tokens = predict(mapper, *part.inputs(mapper.config.input))
        metrics, per_label = evaluate_predictions(pooled, part.pooled, part.frame, pairs.prompts,
                                                  pairs.prompt_pooled, w_cos, w_mse)
        if tokens is not None:
            metrics.update(token_metrics(tokens, part.tokens))
        baseline, _ = evaluate_predictions(np.repeat(train_mean, len(part.frame), axis=0), part.pooled, part.frame,
                                           pairs.prompts, pairs.prompt_pooled, w_cos, w_mse)
        metrics["baseline_mean"] = {k: baseline[k] for k in ("mse", "cosine", "combined", "top1", "top5", "mrr")}
        report[split] = metrics
        tables.append(per_label.assign(split=split))
    # The test split's numbers at the top level, so `dvc metrics show` and `dvc exp show` list them directly.
    write_json("metrics/eval.json", {**report.pop("test"), **report})
    with atomic_path("metrics/eval_per_class.csv") as tmp:
        pd.concat(tables).to_csv(tmp, index=False)


if __name__ == "__main__":
    main()
