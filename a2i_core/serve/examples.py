"""Example sounds for the web app: a few short WAVs a visitor can click instead of uploading one.

Either the project's own (one clip per class from its test split: sounds the mapper never trained on) or a folder
the person starting the app names. Each example is decoded here, at start, and written as a short 16 kHz WAV into
the app's private temp dir: the page then serves only files the app made, in a format every browser plays, and a
file that cannot be heard is skipped at start, with its reason in the log, instead of failing when clicked.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from a2i_core.core import shards
from a2i_core.core.audio_io import AUDIO_SUFFIXES, SAMPLE_RATE, AudioError, decode, decode_stream, not_a_file, write_wav
from a2i_core.core.errors import A2IError, first_line, printable
from a2i_core.core.names import safe_name
from a2i_core.core.packs import PackedClip
from a2i_core.serve.generate import MIN_HEARD_SAMPLES, SILENCE_RMS

log = logging.getLogger(__name__)
MAX_EXAMPLES = 8  # one row of the page; AudioSet's 527 classes must not become 527 buttons
EXAMPLE_SECONDS = 10.0  # an AudioSet clip's length: enough to recognise the sound, a small file to serve
TRIES_PER_CLASS = 3  # clips of one class tried before giving that class up
MAX_TRIES = 4 * MAX_EXAMPLES  # decodes at start, whatever a folder holds: a start must not take minutes
MAX_LOGGED = 20  # skip lines in the log; the rest are counted
LABEL_CHARS = 60


@dataclass(frozen=True)
class Example:
    label: str  # what the page shows
    path: Path  # the WAV written for it


ExampleMaker = Callable[[Path], Sequence[Example]]  # writes a server's examples into the folder it is given


def project_examples(candidates: Path, audio: Path, out_dir: Path, limit: int = MAX_EXAMPLES) -> list[Example]:
    """One test-split clip per class (classes by name, the first clip by id that can be heard), at most ``limit``:
    the classes and splits from the ``candidates`` table, the audio from the download stage's folder ``audio``.

    None, with the reason logged, when the project's data is not there (a mapper pulled without its data, say):
    examples are a convenience, never a reason for the app not to start.
    """
    candidates, audio = Path(candidates), Path(audio)
    try:
        classes = _test_clips(candidates, audio)
    except (A2IError, OSError, ValueError, KeyError, TypeError, pa.ArrowException) as err:  # a damaged table
        log.info("no example sounds from the project: %s", first_line(err, limit=300))
        return []
    examples, skipped, taken, used = [], [], set(), set()
    labels = sorted(classes)
    for n, label in enumerate(labels):
        if len(examples) == limit or len(skipped) >= MAX_TRIES:  # skips bound the decodes: data not pulled, say
            skipped.append((f"{len(labels) - n} more of {len(labels)} classes",
                            f"not tried (at most {limit} examples, {MAX_TRIES} skips)"))
            break
        example = _first_heard(label, classes[label], audio, out_dir, taken, used, skipped)
        if example is not None:
            examples.append(example)
    _report(f"the project's test split ({candidates})", examples, skipped)
    return examples


def folder_examples(folder: Path, out_dir: Path, limit: int = MAX_EXAMPLES) -> list[Example]:
    """The first ``limit`` audio files of ``folder`` (by name, not recursive) that can be heard.

    Anything else is skipped with its reason logged: hidden files, folders, pipes and devices, links that lead
    nowhere (or in a loop), names without an audio suffix, files that cannot be read, decoded or heard. A2IError
    only when the folder itself cannot be listed.
    """
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as err:
        raise A2IError(f"--examples {folder}: cannot list it ({err.strerror or type(err).__name__})") from None
    examples, skipped, taken, tries = [], [], set(), 0
    for n, entry in enumerate(entries):
        if len(examples) == limit or tries == MAX_TRIES:
            skipped.append((f"{len(entries) - n} more of {len(entries)} entries",
                            f"not tried (at most {limit} examples, {MAX_TRIES} files decoded)"))
            break
        reason = _entry_problem(entry)
        if reason is None:
            tries += 1
            dest = out_dir / f"{_unique(safe_name(entry.stem), taken)}.wav"
            reason = _write_example(entry, dest)
            if reason is None:
                examples.append(Example(_shown(entry.name), dest))
                continue
        skipped.append((_shown(entry.name), reason))
    _report(str(folder), examples, skipped)
    return examples


def _test_clips(candidates: Path, audio_dir: Path) -> dict[str, list[tuple[str, str, int]]]:
    """Each label's first test clips (by id) whose audio the download stage got: (clip id, manifest path, row)."""
    # The data pipeline's table names, loaded only here: an app serving a bare mapper never loads them.
    from a2i_core.core.candidates import CANDIDATES_KIND
    from a2i_core.core.manifest import MANIFEST_KIND, MANIFEST_NAME

    # Filtered as read: AudioSet's unbalanced set has two million rows, and the app needs a few.
    test = _read(candidates, CANDIDATES_KIND, ["clip_id", "label"], [("split", "==", "test")])
    if not test["clip_id"]:
        raise A2IError(f"{candidates}: no clip in the test split")
    ok = _read(audio_dir / MANIFEST_NAME, MANIFEST_KIND, ["clip_id", "path", "row"],
               [("status", "==", "ok"), ("clip_id", "in", sorted(set(test["clip_id"])))])
    where = {c: (p, int(r)) for c, p, r in zip(ok["clip_id"], ok["path"], ok["row"], strict=True)}
    classes: dict[str, list[tuple[str, str, int]]] = {}
    for clip_id, label in sorted(zip(test["clip_id"], test["label"], strict=True)):
        clips = classes.setdefault(label, [])  # a class whose test clips all failed to download is still named
        if clip_id in where and len(clips) < TRIES_PER_CLASS:
            clips.append((clip_id, *where[clip_id]))
    return classes


def _read(path: Path, kind: str, columns: list[str], filters: list) -> dict[str, list]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise A2IError(f"{path}: not found (run or pull the pipeline's data to offer its sounds)")
    shards.check_schema(pq.read_schema(path), path, kind)
    return pq.read_table(path, columns=columns, filters=filters).to_pydict()


def _source(audio_dir: Path, path: str, row: int) -> Path | PackedClip:
    """A manifest row's audio, as manifest.clip_sources reads it: a pack's row when ``row`` >= 0, else a file."""
    where = (audio_dir / path).resolve()
    if not where.is_relative_to(audio_dir.resolve()):  # a path from a table must stay under its root
        raise A2IError(f"{audio_dir}: the manifest names {path!r}, outside the audio folder")
    return PackedClip(where, row) if row >= 0 else where


def _first_heard(label: str, clips: list[tuple[str, str, int]], audio_dir: Path, out_dir: Path, taken: set[str],
                 used: set[str], skipped: list[tuple[str, str]]) -> Example | None:
    """The class's example from its first clip that can be heard and is no other class's example (a clip can have
    several labels); each clip that cannot be heard is noted in ``skipped``."""
    shown = _shown(label)
    dest = out_dir / f"{_unique(safe_name(label), taken)}.wav"
    fresh = [(c, p, r) for c, p, r in clips if c not in used]
    for clip_id, path, row in fresh:
        try:
            reason = _write_example(_source(audio_dir, path, row), dest)
        except A2IError as err:
            reason = str(err)
        if reason is None:
            used.add(clip_id)
            return Example(shown, dest)
        skipped.append((f"{shown} ({clip_id})", reason))
    if not clips:
        skipped.append((shown, "no test clip with audio (the download stage could not get one)"))
    elif not fresh:
        skipped.append((shown, "its test clips are other classes' examples already"))
    return None


def _entry_problem(entry: Path) -> str | None:
    """Why a folder entry is not even tried as a sound; None when it is a readable file with an audio suffix."""
    if entry.name.startswith("."):
        return "hidden file"  # .DS_Store, and macOS's ._name.wav copies that hold no audio
    if entry.is_dir():
        return "a folder (not searched)"
    if problem := not_a_file(entry):  # from its metadata: reading a pipe could block the start forever
        return problem
    if entry.suffix.lower() not in AUDIO_SUFFIXES:
        return f"not an audio file name ({entry.suffix or 'no suffix'}; {', '.join(sorted(AUDIO_SUFFIXES))})"
    try:
        with open(entry, "rb") as f:
            f.read(1)
    except OSError as err:
        return f"cannot be read ({err.strerror or type(err).__name__})"
    return None


def _write_example(source: Path | PackedClip, dest: Path) -> str | None:
    """Decode the first EXAMPLE_SECONDS of ``source`` into a WAV at ``dest``; why not, when it cannot be heard."""
    try:
        wave = _head(source, int(EXAMPLE_SECONDS * SAMPLE_RATE))
    except AudioError as err:
        text = str(err).removeprefix(f"{source}: ") if isinstance(source, Path) else str(err)
        return _shown(" ".join(text.split()), limit=300)  # one line, whatever the file's name holds
    if wave.size < MIN_HEARD_SAMPLES:
        return f"too short to hear ({wave.size / SAMPLE_RATE:.3f} s)"
    if np.sqrt(np.mean(np.square(wave, dtype=np.float64))) < SILENCE_RMS:
        return "silent"
    try:
        write_wav(dest, wave)
    except OSError as err:
        return f"cannot be written to the app's temp dir ({err.strerror or type(err).__name__})"
    return None


def _head(source: Path | PackedClip, samples: int) -> np.ndarray:
    """At most ``samples`` of a clip; a long recording is decoded only that far (ffmpeg stops when closed)."""
    if isinstance(source, PackedClip):
        return decode(source)[:samples]  # a pack holds clips, already short
    chunks, have = [], 0
    with contextlib.closing(decode_stream(source)) as stream:
        for chunk in stream:
            chunks.append(chunk[:samples - have])
            have += chunks[-1].size
            if have >= samples:
                break
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``... when taken (a.wav and a.mp3 in one folder must not share a file), taken
    compared casefolded: on a case-insensitive file system (macOS, Windows) Dog.wav and dog.mp3 would be one file."""
    unique, n = name, 1
    while unique.casefold() in taken:
        n += 1
        unique = f"{name}-{n}"
    taken.add(unique.casefold())
    return unique


def _shown(text: str, limit: int = LABEL_CHARS) -> str:
    """A name as the page and the log show it: one line, escaped as every printed line is, short."""
    clean = printable(text)
    return clean if len(clean) <= limit else clean[:limit - 1] + "…"


def _report(source: str, examples: Iterable[Example], skipped: list[tuple[str, str]]) -> None:
    offered = [e.label for e in examples]
    for name, reason in skipped[:MAX_LOGGED]:
        log.info("example skipped: %s: %s", name, reason)
    if len(skipped) > MAX_LOGGED:
        log.info("example skipped: %d more (not listed)", len(skipped) - MAX_LOGGED)
    if offered:
        log.info("example sounds from %s: %s", source, ", ".join(offered))
    else:
        log.warning("no example sounds from %s: none could be heard", source)
