"""image_eval: every rendered row (and the shuffled-audio control) measured as papers report it: AIC, CLIP score,
IIS and its rank form, R@k, FID and KID against the source videos' frames; a headline, a report, a markdown table."""

from a2i_core.core.errors import exit_cleanly, setup_logging
from a2i_core.core.params import load_params
from a2i_core.core.stage import stage_paths
from a2i_core.pipeline.image_eval import image_eval


@exit_cleanly
def main() -> None:
    setup_logging()
    paths = stage_paths("images", "index", "reference_images", "reference_index", "text_features", "clip", "frames",
                        "metrics", "report", "table", "scores")
    rendered = [(paths.pop("index"), paths.pop("images")),
                (paths.pop("reference_index"), paths.pop("reference_images"))]
    image_eval(load_params().evaluate, rendered, **paths)


if __name__ == "__main__":
    main()
