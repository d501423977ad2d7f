"""A recording's per-window scores smoothed into events, and events as files: a timeline CSV and WebVTT subtitles.

Each window is scored against the prompt bank (a softmax over cosines); a Viterbi pass over the labels and a "no
event" state (silence or low confidence) with a cost for each change of state keeps labels from flickering, and
events shorter than a minimum are merged into the neighbour that fits them better. The events tile the recording.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from a2i_core.core.errors import A2IError, first_line, printable
from a2i_core.core.files import atomic_path
from a2i_core.core.params import TimelineParams

CSV_COLUMNS = ["start", "end", "label", "score"]
# A timeline CSV is read whole: an hour at one event a second is ~100 KB; anything near this is not a timeline.
MAX_CSV_BYTES = 16 << 20
LENGTH_SLACK = 1e-9  # seconds: i * hop in floats may miss an exact minimum length by an ulp
# What would end or split a WebVTT cue (a blank line ends it; CR, LF and NUL are the parser's line breaks and a
# replaced character) or restyle a terminal: each run of control characters becomes one space.
VTT_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


@dataclass(frozen=True)
class Event:
    """A span of a recording in seconds; ``label`` None is "no event" (silence or low confidence)."""

    start: float
    end: float
    label: str | None
    score: float


# ---- scores ----------------------------------------------------------------------------------------------------


def window_scores(pooled: np.ndarray, bank: np.ndarray, temperature: float) -> np.ndarray:
    """(n, P) predicted pooled embeddings against the (K, P) prompt bank: (n, K) softmax over cosines / temperature."""
    pooled, bank = np.asarray(pooled, np.float64), np.asarray(bank, np.float64)
    _check_scoring_inputs(pooled, bank, temperature)
    logits = _unit_rows(pooled) @ _unit_rows(bank).T / temperature  # (n, K)
    logits -= logits.max(axis=1, keepdims=True)  # exp never overflows; the softmax is unchanged
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def _check_scoring_inputs(pooled: np.ndarray, bank: np.ndarray, temperature: float) -> None:
    if pooled.ndim != 2 or pooled.shape[0] < 1:
        raise A2IError(f"timeline: predictions must be (windows, dims) with at least one window, got {pooled.shape}")
    if bank.ndim != 2 or bank.shape[0] < 1 or bank.shape[1] != pooled.shape[1]:
        raise A2IError(f"timeline: the prompt bank must be (prompts, {pooled.shape[1]}), got {bank.shape}")
    if not (np.isfinite(pooled).all() and np.isfinite(bank).all()):
        raise A2IError("timeline: predictions or prompt bank hold NaN or inf: check the mapper and its inputs")
    if not (math.isfinite(temperature) and temperature > 0):
        raise A2IError(f"timeline: temperature must be > 0, got {temperature}")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    # A zero row (silence through a mapper with no bias) has no direction: it stays zero, cosine 0 to everything.
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ---- smoothing -------------------------------------------------------------------------------------------------


def segment(scores: np.ndarray, levels_db: np.ndarray, labels: list[str], hop: float, duration: float,
            cfg: TimelineParams) -> list[Event]:
    """Window i (starting at i * hop seconds) scored (n, K) over ``labels`` -> events tiling [0, duration].

    Label K is "no event". A window quieter than ``cfg.silence_db`` (``levels_db`` may be -inf: digital silence)
    can only be "no event".
    """
    scores, levels_db = np.asarray(scores, np.float64), np.asarray(levels_db, np.float64)
    _check_segment_inputs(scores, levels_db, labels, hop, duration)
    emission = _emissions(scores, levels_db, cfg)  # (n, K + 1)
    states = _viterbi(emission, cfg.switch_penalty)  # (n,)
    starts, runs = _runs(states)
    starts, runs = _merge_short(starts, runs, emission, hop, duration, cfg.min_event_seconds)
    return _events(starts, runs, scores, labels, hop, duration)


def _check_segment_inputs(scores: np.ndarray, levels_db: np.ndarray, labels: list[str], hop: float,
                          duration: float) -> None:
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] != len(labels) or not labels:
        raise A2IError(f"timeline: scores must be (windows >= 1, {len(labels)} labels), got {scores.shape}")
    if not (np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()):
        raise A2IError("timeline: window scores must be finite probabilities in [0, 1]")
    if levels_db.shape != (scores.shape[0],) or np.isnan(levels_db).any() or (levels_db == np.inf).any():
        raise A2IError(f"timeline: window levels must be ({scores.shape[0]},) dBFS values, got {levels_db.shape}")
    if not (math.isfinite(hop) and hop > 0):
        raise A2IError(f"timeline: the windows' hop must be > 0 seconds, got {hop}")
    n = scores.shape[0]
    # The last window starts before the end. A window reads a little past its hop (VGGish: 0.975 s windows 0.96 s
    # apart), so a tail of up to a hop plus that overlap is left over where the encoder drops a partial window: 600 s
    # is 624 VGGish windows, and 625 hops are exactly 600 s. Two hops bound it for every encoder.
    if not (math.isfinite(duration) and (n - 1) * hop < duration < (n + 2) * hop):
        raise A2IError(f"timeline: {n} windows {hop:g} s apart cannot cover a recording of {duration:g} s")


def _emissions(scores: np.ndarray, levels_db: np.ndarray, cfg: TimelineParams) -> np.ndarray:
    with np.errstate(divide="ignore"):
        labelled = np.log(scores)  # (n, K); a score of 0 is -inf: that label is impossible there
    labelled[levels_db < cfg.silence_db] = -np.inf
    # Kept finite with min_score 0, so that a silent window always has a possible state.
    none = math.log(max(cfg.min_score, np.finfo(np.float64).tiny))
    return np.column_stack([labelled, np.full(len(scores), none)])


def _viterbi(emission: np.ndarray, penalty: float) -> np.ndarray:
    """The most likely state per window under one cost for any change of state: O(n K), not O(n K^2), since the
    best way into a state is either staying in it or leaving the best state overall."""
    n, k = emission.shape
    back = np.empty((n, k), np.int32)  # the state each window's best path came from
    best = emission[0].copy()
    for t in range(1, n):
        leader = int(np.argmax(best))
        switch = best[leader] - penalty
        stay = best >= switch  # ties stay: no change without a gain
        back[t] = np.where(stay, np.arange(k), leader)
        best = np.where(stay, best, switch) + emission[t]
    path = np.empty(n, np.int64)
    path[-1] = int(np.argmax(best))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def _runs(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-window states as runs: each run's first window and its state."""
    first = np.flatnonzero(np.r_[True, states[1:] != states[:-1]])
    return first, states[first]


def _merge_short(starts: np.ndarray, runs: np.ndarray, emission: np.ndarray, hop: float, duration: float,
                 minimum: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge the shortest run below ``minimum`` seconds into its better-fitting neighbour until none is left (or
    one run, the whole recording, is)."""
    while len(starts) > 1:
        lengths = _bounds(starts, hop, duration, len(emission))[1] - starts * hop
        short = int(np.argmin(lengths))  # the earliest of the shortest: deterministic
        if lengths[short] >= minimum - LENGTH_SLACK:
            break
        runs = runs.copy()
        runs[short] = _better_neighbour(starts, runs, short, emission)
        keep = np.r_[True, runs[1:] != runs[:-1]]  # equal neighbours become one run
        starts, runs = starts[keep], runs[keep]
    return starts, runs


def _bounds(starts: np.ndarray, hop: float, duration: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each run's (end window, end time); the last run ends at the recording's end."""
    ends = np.r_[starts[1:], n]
    return ends, np.r_[starts[1:] * hop, duration]


def _better_neighbour(starts: np.ndarray, runs: np.ndarray, i: int, emission: np.ndarray) -> int:
    """The neighbouring state whose mean log-score over run ``i``'s windows is higher (the left one on a tie)."""
    end = starts[i + 1] if i + 1 < len(starts) else len(emission)
    windows = emission[starts[i]:end]
    candidates = [runs[j] for j in (i - 1, i + 1) if 0 <= j < len(runs)]
    fits = [windows[:, state].mean() for state in candidates]
    return int(candidates[int(np.argmax(fits))])


def _events(starts: np.ndarray, runs: np.ndarray, scores: np.ndarray, labels: list[str], hop: float,
            duration: float) -> list[Event]:
    ends, end_times = _bounds(starts, hop, duration, len(scores))
    events = []
    for first, last, end, state in zip(starts, ends, end_times, runs, strict=True):
        window = scores[first:last]
        none = state == len(labels)
        score = window.max(axis=1).mean() if none else window[:, state].mean()
        events.append(Event(float(first * hop), float(end), None if none else labels[state], float(score)))
    return events


# ---- files -----------------------------------------------------------------------------------------------------


def write_csv(events: list[Event], path: str | Path) -> None:
    """``start,end,label,score`` (times to the millisecond; "no event" as an empty label), UTF-8, atomically."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for event in events:
        if event.label == "":
            raise A2IError(f"{path}: an event at {event.start:.3f} s has an empty label, which reads back as no event")
        writer.writerow([f"{event.start:.3f}", f"{event.end:.3f}", event.label or "", f"{event.score:.4f}"])
    with atomic_path(path) as tmp:
        tmp.write_text(out.getvalue(), encoding="utf-8")


def read_csv(path: str | Path) -> list[Event]:
    """A timeline CSV as written by ``write_csv``: events in order, none overlapping (gaps allowed)."""
    rows = csv.reader(io.StringIO(_read_text(Path(path)), newline=""), strict=True)
    try:
        header = next(rows, None)
        if header != CSV_COLUMNS:
            raise A2IError(f"{printable(path)}: the header must be {','.join(CSV_COLUMNS)}, got {printable(header)}")
        events: list[Event] = []
        for row in rows:
            events.append(_parse_row(row, events[-1] if events else None, f"{printable(path)} row {rows.line_num}"))
    except csv.Error as err:
        raise A2IError(f"{printable(path)} row {rows.line_num}: not CSV ({first_line(err)})") from None
    return events


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CSV_BYTES + 1)  # never more, whatever the file holds or grows to
    except OSError as err:
        raise A2IError(f"{printable(path)}: cannot read ({first_line(err)})") from None
    if len(data) > MAX_CSV_BYTES:
        raise A2IError(f"{printable(path)}: over {MAX_CSV_BYTES >> 20} MiB: not a timeline")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise A2IError(f"{printable(path)}: not UTF-8 text (byte {err.start})") from None


def _parse_row(row: list[str], previous: Event | None, where: str) -> Event:
    if len(row) != len(CSV_COLUMNS):
        raise A2IError(f"{where}: expected {len(CSV_COLUMNS)} fields, got {len(row)}")
    start, end, score = (_number(row[i], CSV_COLUMNS[i], where) for i in (0, 1, 3))
    if start < 0 or end <= start:
        raise A2IError(f"{where}: needs 0 <= start < end, got start {start:g}, end {end:g}")
    if not 0 <= score <= 1:
        raise A2IError(f"{where}: score must be in [0, 1], got {score:g}")
    if previous is not None and start < previous.end:
        raise A2IError(f"{where}: starts at {start:g} s, before the previous event ends ({previous.end:g} s): "
                       "events must be in order and not overlap")
    return Event(start, end, row[2] or None, score)


def _number(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise A2IError(f"{where}: {column} is not a number: {printable(text[:40])!r}") from None
    if not math.isfinite(value):
        raise A2IError(f"{where}: {column} must be finite, got {printable(text[:40])!r}")
    return value


def write_vtt(events: list[Event], path: str | Path) -> None:
    """WebVTT subtitles, one cue per labelled event ("label (0.93)"), UTF-8, atomically."""
    cues = [cue for cue in map(_cue, events) if cue]
    text = "WEBVTT\n\n" + "".join(f"{number}\n{cue}\n\n" for number, cue in enumerate(cues, 1))
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _cue(event: Event) -> str:
    """An event's timing line and text; empty for no event or one that would not end after it starts."""
    begin, end = _millis(event.start), _millis(event.end)
    if event.label is None or end <= begin:
        return ""
    return f"{_timestamp(begin)} --> {_timestamp(end)}\n{vtt_text(event.label)} ({event.score:.2f})"


def vtt_text(label: str) -> str:
    """A label from data as cue text: one line, no markup. The WebVTT spec's escapes for & < > also turn "-->",
    which would otherwise start a forged cue's timing line, into "--&gt;"."""
    text = label.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return VTT_CONTROLS.sub(" ", text).strip() or "?"


def _millis(seconds: float) -> int:
    return int(round(seconds * 1000))


def _timestamp(millis: int) -> str:
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"

