"""evaluate: held-out (test split) metrics of the mapper -> metrics/eval.json, metrics/eval_per_class.csv."""

import numpy as np

from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.evaluate import evaluate_predictions, predict
from a2i_core.files import atomic_path, write_json
from a2i_core.mapper import AudioToSD3Mapper
from a2i_core.pairs import load_pairs
from a2i_core.params import load_params


@exit_cleanly
def main() -> None:
    setup_logging()
    cfg = load_params().train
    mapper = AudioToSD3Mapper.from_pretrained("models/mapper")
    pairs = load_pairs("data/candidates.parquet", "data/features/audio", "data/features/text")
    mapper.check_provenance(pairs.audio_meta, "data/features/audio")
    test, train = pairs.split("test"), pairs.split("train")
    metrics, per_label = evaluate_predictions(predict(mapper, test.audio), test.target, test.frame, pairs.prompts,
                                              pairs.prompt_pooled, cfg.w_cos, cfg.w_mse)
    # The trivial baseline: always predict the training set's mean embedding.
    mean = np.repeat(train.target.mean(0, keepdims=True), len(test.frame), axis=0)
    baseline, _ = evaluate_predictions(mean, test.target, test.frame, pairs.prompts, pairs.prompt_pooled,
                                       cfg.w_cos, cfg.w_mse)
    metrics["baseline_mean"] = {k: baseline[k] for k in ("mse", "cosine", "combined", "top1", "top5")}
    write_json("metrics/eval.json", metrics)
    with atomic_path("metrics/eval_per_class.csv") as tmp:
        per_label.to_csv(tmp, index=False)


if __name__ == "__main__":
    main()
