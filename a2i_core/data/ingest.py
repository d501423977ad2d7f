"""Source metadata -> candidate (clip, label, prompt, split) rows: each source's reader, one table."""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import pandas as pd

from a2i_core.core.candidates import HELDOUT, assign_split
from a2i_core.core.errors import A2IError
from a2i_core.core.fetch_file import local_copy, sha256_file
from a2i_core.core.names import MAX_LABEL_CHARS, MAX_PROMPT_CHARS, text_problem
from a2i_core.core.params import DataParams, ParamsError
from a2i_core.core.skipped import Skipped
from a2i_core.core.urls import redact
from a2i_core.data.sources import audioset, local, synthetic, vggsound

log = logging.getLogger(__name__)
LEARNT_SPLITS = ("train", "val")  # the clips a mapper learnt from, or was stopped on


def prompt_for(template: str, name: str) -> str:
    return template.format(name=name)


def build_candidates(data: DataParams) -> tuple[pd.DataFrame, dict]:
    """One row per (clip, label) pair: clip_id, group, label, prompt, split, plus the source's own columns;
    and what the source reports (rows read, labels dropped and why, header checks)."""
    report: dict = {}
    if data.source == "synthetic":
        frame = synthetic_candidates(data)
    elif data.source == "audioset":
        frame, report = audioset_candidates(data)
    elif data.source == "audiocaps":
        frame, report = audiocaps_candidates(data)
    elif data.source == "vggsound":
        location = data.vggsound.csv
        frame, report = vggsound.vggsound_candidates(local_copy(location), redact(location), data.vggsound.split,
                                                     data.prompt_template)
    else:
        rows, skipped = local.esc50_rows(data.esc50.root, data.archives) if data.source == "esc50" else \
            local.folder_rows(data.folder.root, data.folder.labels_csv)
        frame = rows.assign(prompt=[prompt_for(data.prompt_template, n) for n in rows["name"]],
                            source=data.source).drop(columns="name")
        report = {"rows_skipped": skipped}
    frame, bad_text = drop_bad_text(frame)
    report["rows_skipped"] = dict(Counter(report.get("rows_skipped", {})) + Counter(bad_text))
    if frame.empty:
        raise A2IError(f"data.source {data.source}: no usable rows (skipped: {report['rows_skipped']})")
    frame["split"] = [assign_split(g, data.seed, data.val_fraction, data.test_fraction) for g in frame["group"]]
    if "vggsound_split" in frame:
        frame["split"] = official_test_split(frame)
    if data.heldout_classes:
        unknown = sorted(set(data.heldout_classes) - set(frame["label"]))
        if unknown:
            raise A2IError(f"data.heldout_classes: {unknown} are not labels of this source")
        # Whole recordings: a clip that carries a held-out label never reaches training under another label.
        heldout_groups = set(frame.loc[frame["label"].isin(data.heldout_classes), "group"])
        frame.loc[frame["group"].isin(heldout_groups), "split"] = HELDOUT
    return frame.sort_values(["clip_id", "label"], ignore_index=True), report


def official_test_split(frame: pd.DataFrame) -> pd.Series:
    """VGGSound's own test split as the test split (the field's shared benchmark; data.test_fraction does not apply),
    its train split as train and val by data.val_fraction. A video with a row in its test split is tested whole."""
    tested = set(frame.loc[frame["vggsound_split"] == "test", "group"])
    split = frame["split"].where(frame["split"] != "test", "train")
    return split.where(~frame["group"].isin(tested), "test")


def drop_leaked(frame: pd.DataFrame, training: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int] | None]:
    """An evaluation set's rows without those whose video (``ytid``) is a video of ``training``'s train or val split,
    and how many videos and rows went; None when either has no videos (ESC-50, a folder, the synthetic classes):
    such sources cannot share one. VGGSound's and AudioCaps' videos overlap AudioSet's: a mapper scored on the very
    videos it learnt from would be scored on its memory."""
    if "ytid" not in frame.columns or "ytid" not in training.columns:
        return frame, None
    learnt = set(training.loc[training["split"].isin(LEARNT_SPLITS), "ytid"].dropna())
    leaked = frame["ytid"].isin(learnt)
    report = {"videos": int(frame.loc[leaked, "ytid"].nunique()), "rows": int(leaked.sum())}
    if report["rows"]:
        log.info("%d rows of %d videos dropped: their videos are training clips", report["rows"], report["videos"])
        if leaked.all():
            raise A2IError(f"every one of the set's {len(frame)} rows is from a video the mapper trained on (its "
                           f"{' or '.join(LEARNT_SPLITS)} split): nothing is left to evaluate")
    return frame[~leaked].reset_index(drop=True), report


def drop_bad_text(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows whose label or prompt cannot be used, reported and dropped: labels come from CSVs, archives and
    ontologies, and a newline or 10 KB of text must not end a stage downstream."""
    skipped = Skipped("candidates")
    keep = []
    for clip_id, label, prompt in zip(frame["clip_id"], frame["label"], frame["prompt"], strict=True):
        if problem := text_problem(label, MAX_LABEL_CHARS):
            skipped.add("bad_label", f"{clip_id}: label {problem}")
        elif problem := text_problem(prompt, MAX_PROMPT_CHARS):
            skipped.add("bad_prompt", f"{clip_id}: prompt {problem}")
        keep.append(problem is None)
    return frame[keep].reset_index(drop=True), skipped.done()


def synthetic_candidates(data: DataParams) -> pd.DataFrame:
    cfg = data.synthetic
    unknown = [name for name in cfg.classes if name not in synthetic.SOUND_CLASSES]
    if unknown:
        raise ParamsError(f"data.synthetic.classes: unknown class {unknown[0]!r} "
                          f"(known: {', '.join(synthetic.SOUND_CLASSES)})")
    specs = synthetic.clip_specs(cfg.classes, cfg.clips_per_class, cfg.min_seconds, cfg.max_seconds, data.seed)
    rows = []
    for clip_id, spec in specs.items():
        rows.append({
            "clip_id": clip_id,
            "group": clip_id,  # every synthetic clip is its own recording
            "label": spec.label,
            "prompt": synthetic.class_prompt(spec.label, data.prompt_template),
            "source": "synthetic",
            "seed": spec.seed,
            "seconds": spec.seconds,
            "gain_db": spec.gain_db,
            "snr_db": spec.snr_db,
        })
    return pd.DataFrame(rows)


def audioset_candidates(data: DataParams) -> tuple[pd.DataFrame, dict]:
    cfg = data.audioset
    files = {"class_labels": cfg.class_labels, "qa_counts": cfg.qa_counts, "ontology": cfg.ontology}
    paths = {k: local_copy(v) for k, v in files.items()}
    segment_paths = [local_copy(s) for s in cfg.segments]
    names = audioset.read_class_labels(paths["class_labels"])
    quality = audioset.read_quality(paths["qa_counts"], list(names))
    restrictions = audioset.read_restrictions(paths["ontology"])
    kept, dropped = audioset.label_filter(names, quality, restrictions, cfg.min_label_quality,
                                          cfg.excluded_restrictions, cfg.include, cfg.exclude)
    pairs, stats, dropped_pairs = audioset.select_pairs(segment_paths, kept, cfg.max_pairs_per_class, data.seed)
    frame = pd.DataFrame({
        "clip_id": [f"{s.ytid}_{round(s.start * 1000)}" for s, _ in pairs],
        "group": [s.ytid for s, _ in pairs],  # a video: never in two splits
        "label": [names[mid] for _, mid in pairs],
        "mid": [mid for _, mid in pairs],
        "prompt": [prompt_for(data.prompt_template, audioset.readable_name(names[mid])) for _, mid in pairs],
        "source": "audioset", "ytid": [s.ytid for s, _ in pairs],
        "start": [s.start for s, _ in pairs], "end": [s.end for s, _ in pairs],
    })
    report = {
        "metadata_sha256": {k: sha256_file(p) for k, p in {**paths, **{str(s): s for s in segment_paths}}.items()},
        "segment_files": {Path(f.path).name: {"segments_read": f.segments, "invalid_rows": f.invalid_rows,
                                              "header": f.header, "header_mismatches": f.mismatches()}
                          for f in stats},
        "segments_read": sum(f.segments for f in stats),
        "labels_total": len(names), "labels_kept": len(kept),
        "labels_dropped": dict(Counter(dropped.values())),
        "pairs_dropped": dict(dropped_pairs),
    }
    return frame, report


AUDIOCAPS_COLUMNS = ["audiocap_id", "youtube_id", "start_time", "caption"]


def audiocaps_candidates(data: DataParams) -> tuple[pd.DataFrame, dict]:
    """Captions are the prompts; clips come through the same YouTube downloader as AudioSet's."""
    rows = []
    skipped = Skipped("AudioCaps")
    for location in data.audiocaps.csv:
        shown = redact(location)  # a signed URL's query is a secret
        caps = local.read_csv(local_copy(location), dtype=str, keep_default_na=False)
        missing = [c for c in AUDIOCAPS_COLUMNS if c not in caps.columns]
        if missing:
            raise A2IError(f"{shown}: no column {missing[0]!r} (an AudioCaps CSV has {', '.join(AUDIOCAPS_COLUMNS)})")
        for line, (cap_id, ytid, start_text, caption) in enumerate(caps[AUDIOCAPS_COLUMNS].itertuples(index=False),
                                                                   start=2):
            start, problem = audiocaps_start(start_text)
            if problem is None and not audioset.YTID.fullmatch(ytid):
                problem = "invalid YouTube id"
            if problem is None and not (cap_id.isascii() and cap_id.isdigit()):  # "²".isdigit() is True
                problem = "audiocap_id is not a number"
            if problem:
                skipped.add("invalid_row", f"{shown}:{line}: {problem} ({ytid[:40]!r}, {start_text[:40]!r})")
                continue
            rows.append({"clip_id": f"{ytid}_{round(start * 1000)}", "group": ytid,
                         "label": f"audiocaps_{int(cap_id)}", "prompt": caption.strip(), "source": "audiocaps",
                         "ytid": ytid, "start": start, "end": start + audioset.MAX_SEGMENT_SECONDS})
    return pd.DataFrame(rows, columns=["clip_id", "group", "label", "prompt", "source", "ytid", "start", "end"]), \
        {"rows_skipped": skipped.done()}


def audiocaps_start(text: str) -> tuple[float, str | None]:
    """A segment's start in seconds, or why it is not one: it becomes a clip id and an ffmpeg cut, so it must be
    a finite number inside a YouTube video."""
    try:
        start = float(text)
    except ValueError:
        return 0.0, "start_time is not a number"
    if not math.isfinite(start) or not 0 <= start <= audioset.MAX_START_SECONDS:
        return 0.0, f"start_time outside [0, {audioset.MAX_START_SECONDS:.0f}] s"
    return start, None
