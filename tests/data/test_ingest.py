from a2i_core.core.candidates import assign_split, data_counts
from a2i_core.core.params import params_from_dict
from a2i_core.data.ingest import build_candidates


def test_split_is_stable_and_near_the_fractions():
    groups = [f"video{i}" for i in range(4000)]
    splits = [assign_split(g, 0, 0.1, 0.2) for g in groups]
    assert splits == [assign_split(g, 0, 0.1, 0.2) for g in groups]
    assert abs(splits.count("test") / 4000 - 0.2) < 0.03
    assert abs(splits.count("val") / 4000 - 0.1) < 0.03
    assert splits != [assign_split(g, 1, 0.1, 0.2) for g in groups]  # the seed matters


def test_candidates_from_the_synthetic_source(raw_params):
    raw_params["data"]["synthetic"]["clips_per_class"] = 10
    frame, _ = build_candidates(params_from_dict(raw_params).data)
    assert len(frame) == 80 and frame["clip_id"].is_unique
    assert set(frame["split"]) == {"train", "val", "test"}
    assert frame.groupby("group")["split"].nunique().max() == 1
    bell = frame[frame["label"] == "bell"]["prompt"].unique().tolist()
    assert bell == ["an image of a ringing church bell"]
    counts = data_counts(frame)
    assert counts["pairs"] == 80 and counts["prompts"] == 8 and sum(counts["pairs_per_split"].values()) == 80
