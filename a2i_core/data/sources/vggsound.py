"""VGGSound: its published ``vggsound.csv``, one 10 s YouTube clip a row: ``youtube_id,start_seconds,label,split``.

The file has no header; labels are lower-case phrases ("dog barking"), some holding commas and then quoted. Clips
come through the same YouTube downloader as AudioSet's, and the same video may be in AudioSet too: an evaluation set
drops the rows whose videos the mapper trained on (see :func:`a2i_core.data.ingest.drop_leaked`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from a2i_core.core.errors import A2IError
from a2i_core.core.names import MAX_LABEL_CHARS, text_problem
from a2i_core.core.skipped import Skipped
from a2i_core.data.sources.audioset import MAX_SEGMENT_SECONDS, MAX_START_SECONDS, YTID

SPLITS = ("train", "test")
FIELDS = 4
COLUMNS = ["clip_id", "group", "label", "prompt", "source", "ytid", "start", "end", "vggsound_split"]
SHOWN_CHARS = 40  # of a bad field, in the log: a 10 KB label is not 10 KB of log


def clip_rows(path: Path, shown: str, skipped: Skipped) -> Iterator[tuple[str, float, str, str]]:
    """Valid rows as (ytid, start, label, split), in file order; the others counted in ``skipped``, one reason each.

    The whole file goes through one CSV reader, so a quoted label may hold a comma (or a newline, which is then
    refused as a label). A row the parser itself refuses (a field over its size limit) is skipped, not fatal.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is no part of an id
            reader = csv.reader(f)
            while True:
                line = reader.line_num + 1  # where the row starts: a quoted field may span lines
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    skipped.add("invalid_row", f"{shown}:{line}: not a CSV row ({err})")
                    continue
                if not row:  # a blank line
                    continue
                problem = row_problem(row)
                if problem:
                    shown_row = ",".join(field[:SHOWN_CHARS] for field in row[:FIELDS + 1])
                    skipped.add("invalid_row", f"{shown}:{line}: {problem} ({shown_row})")
                    continue
                ytid, start, label, split = row
                yield ytid, float(start), label.strip(), split
    except UnicodeDecodeError as err:
        raise A2IError(f"{shown}: not a text file (not UTF-8: {err.reason}): is it VGGSound's vggsound.csv?") \
            from None
    except OSError as err:
        raise A2IError(f"{shown}: cannot read ({err.strerror or type(err).__name__})") from None


def row_problem(row: list[str]) -> str | None:
    """Why a row is not a VGGSound clip (one short reason), or None: its id and time become a URL and an ffmpeg
    cut, its label a prompt and one of the set's classes."""
    if len(row) != FIELDS:
        return f"{len(row)} fields, not {FIELDS} (youtube_id,start_seconds,label,split)"
    ytid, start_text, label, split = row
    if not YTID.fullmatch(ytid):
        return "invalid YouTube id"
    try:
        start = float(start_text)
    except ValueError:
        return "start_seconds is not a number"
    if not math.isfinite(start) or not 0 <= start <= MAX_START_SECONDS:
        return f"start_seconds outside [0, {MAX_START_SECONDS:.0f}] s"
    if problem := text_problem(label, MAX_LABEL_CHARS):
        return f"label {problem}"
    if split not in SPLITS:
        return f"split is not {' or '.join(SPLITS)}"
    return None


def vggsound_candidates(path: Path, shown: str, split: str, prompt_template: str) -> tuple[pd.DataFrame, dict]:
    """The rows of ``split`` (test, train, or all) as candidates, one per clip; and the report: how many label texts
    the whole file has (``labels_total``: the set's classes, whatever the split, 309 in the real file; not
    ``labels``, which the counts beside it use for the labels of the rows kept), rows read and skipped.

    ``shown`` names the file in messages (a URL with its secrets redacted)."""
    skipped = Skipped("VGGSound")
    rows, seen, labels, read = [], set(), set(), 0  # read: valid rows, duplicates too
    for ytid, start, label, row_split in clip_rows(path, shown, skipped):
        read += 1
        labels.add(label)
        clip_id = f"{ytid}_{round(start * 1000)}"
        if clip_id in seen:  # the same clip listed twice: one row, or its audio would be counted twice
            skipped.add("duplicate_clip", f"{shown}: {clip_id} ({label})")
            continue
        seen.add(clip_id)
        if split != "all" and row_split != split:
            continue
        rows.append({"clip_id": clip_id, "group": ytid, "label": label,
                     "prompt": prompt_template.format(name=label), "source": "vggsound",
                     "ytid": ytid, "start": start, "end": start + MAX_SEGMENT_SECONDS, "vggsound_split": row_split})
    invalid = skipped.counts["invalid_row"]
    report = {"labels_total": len(labels), "rows_read": read + invalid, "rows_skipped": skipped.done()}
    return pd.DataFrame(rows, columns=COLUMNS), report
