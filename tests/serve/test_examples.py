"""The web app's example sounds: one test clip per class from the project's data (WAVs or packs), or a folder of the
user's own, whatever that folder holds; each written as a short WAV, each skip logged with its reason."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from a2i_core.core import shards
from a2i_core.core.audio_io import SAMPLE_RATE, decode, write_wav
from a2i_core.core.candidates import CANDIDATES_KIND
from a2i_core.core.errors import A2IError, printable
from a2i_core.core.manifest import save_manifest
from a2i_core.core.packs import PACK_DIR, PACK_KIND, encode_flac
from a2i_core.serve.examples import EXAMPLE_SECONDS, MAX_EXAMPLES, Example, folder_examples, project_examples


def _tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _project(root: Path, clips: list[tuple[str, str, str]], audio: dict[str, np.ndarray | None],
             packed: dict[str, np.ndarray] | None = None, rows: dict[str, dict] | None = None) -> Path:
    """A project's data as ingest and download leave it: ``clips`` (clip id, label, split); ``audio`` each clip's
    WAV (None: the download failed), ``packed`` clips in one pack; ``rows`` manifest rows to use instead."""
    data = root / "data"
    audio_dir = data / "audio"
    audio_dir.mkdir(parents=True)
    table = pa.table({"clip_id": [c for c, _, _ in clips], "label": [lb for _, lb, _ in clips],
                      "prompt": [f"an image of a {lb}" for _, lb, _ in clips], "split": [s for _, _, s in clips]})
    shards.write_table(table, data / "candidates.parquet", CANDIDATES_KIND)
    manifest = {}
    for clip_id, wave in audio.items():
        if wave is None:
            manifest[clip_id] = {"clip_id": clip_id, "status": "failed", "reason": "gone", "path": None, "seconds": 0.0}
        else:
            write_wav(audio_dir / f"{clip_id}.wav", wave)
            manifest[clip_id] = {"clip_id": clip_id, "status": "ok", "reason": None, "path": f"{clip_id}.wav",
                                 "seconds": wave.size / SAMPLE_RATE}
    if packed:
        ids = list(packed)
        (audio_dir / PACK_DIR).mkdir()
        shards.write_table(pa.table({"clip_id": ids, "flac": pa.array([encode_flac(packed[c], SAMPLE_RATE)
                                                                       for c in ids], pa.binary())}),
                           audio_dir / PACK_DIR / "pack-00000.parquet", PACK_KIND, row_group_size=1)
        for row, clip_id in enumerate(ids):
            manifest[clip_id] = {"clip_id": clip_id, "status": "ok", "reason": None,
                                 "path": f"{PACK_DIR}/pack-00000.parquet", "row": row, "seconds": 1.0}
    save_manifest(audio_dir, {**manifest, **(rows or {})})
    return root


def _project_examples(project: Path, out: Path) -> list[Example]:
    """The examples `a2i app --project PROJECT` offers: its data where the pipeline leaves it."""
    return project_examples(project / "data" / "candidates.parquet", project / "data" / "audio", out)


def _wav(path: Path) -> np.ndarray:
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.format) == (SAMPLE_RATE, 1, "WAV")
    return decode(path)


def _skips(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "a2i_core.serve.examples")


def test_one_test_clip_per_class_from_wavs_and_packs(tmp_path, caplog):
    clips = [("bell_1", "bell", "test"), ("dog_0", "dog", "test"), ("dog_1", "dog", "test"),
             ("dog_2", "dog", "test"), ("dog_3", "dog", "train"), ("rain_1", "rain", "train"),
             ("siren_1", "siren", "test"), ("siren_2", "siren", "test"), ("x_1", "a/../../x", "test"),
             ("both_1", "bark", "test"), ("both_1", "woof", "test"), ("gone_1", "gone", "test")]
    audio = {"dog_0": None, "dog_1": _tone(12, 300), "dog_2": _tone(2, 350), "dog_3": _tone(2, 400),
             "rain_1": _tone(2), "siren_1": np.zeros(SAMPLE_RATE, np.float32), "siren_2": _tone(3, 900),
             "x_1": _tone(1), "both_1": _tone(2, 200), "gone_1": None}
    project = _project(tmp_path / "p", clips, audio, packed={"pad": _tone(1), "bell_1": _tone(1.5, 700)})
    out = tmp_path / "app" / "examples"
    with caplog.at_level(logging.INFO, logger="a2i_core.serve.examples"):
        examples = _project_examples(project, out)
    # Classes by name; a clip labelled twice serves one class only; classes with no test audio are not offered.
    assert [e.label for e in examples] == ["a/../../x", "bark", "bell", "dog", "siren"]
    assert all(e.path.parent == out and e.path.suffix == ".wav" for e in examples)  # the label never makes a path
    by_label = {e.label: _wav(e.path) for e in examples}
    # The first test clip by id that can be heard, cut to EXAMPLE_SECONDS; the pack's row, not its neighbour.
    np.testing.assert_allclose(by_label["dog"], _tone(12, 300)[:int(EXAMPLE_SECONDS * SAMPLE_RATE)], atol=1e-3)
    np.testing.assert_allclose(by_label["bell"], _tone(1.5, 700), atol=1e-3)
    np.testing.assert_allclose(by_label["siren"], _tone(3, 900), atol=1e-3)
    log = _skips(caplog)
    assert "siren (siren_1): silent" in log
    assert "woof: its test clips are other classes' examples" in log and "gone: no test clip with audio" in log
    assert "rain" not in log.split("example sounds from")[-1]  # train clips are never offered
    assert "example sounds from the project's test split" in log


def test_at_most_eight_classes_and_a_path_outside_the_audio_folder_is_refused(tmp_path, caplog):
    labels = [f"class{i:02d}" for i in range(MAX_EXAMPLES + 2)]
    clips = [(f"{lb}_1", lb, "test") for lb in labels]
    escape = {"clip_id": "class00_1", "status": "ok", "reason": None, "path": "../../../etc/hostname", "row": -1,
              "seconds": 1.0}
    project = _project(tmp_path / "p", clips, {c: _tone(1, 200 + 50 * i) for i, (c, _, _) in enumerate(clips)},
                       rows={"class00_1": escape})
    with caplog.at_level(logging.INFO, logger="a2i_core.serve.examples"):
        examples = _project_examples(project, tmp_path / "out")
    assert [e.label for e in examples] == labels[1:MAX_EXAMPLES + 1]
    log = _skips(caplog)
    assert "class00 (class00_1): " in log and "outside the audio folder" in log
    assert "1 more of 10 classes: not tried (at most 8 examples" in log


def test_a_damaged_pack_skips_its_clips_with_a_reason(tmp_path, caplog):
    """A pack that is not Parquet (a truncated pull, say) costs its clips, never the app's start."""
    clips = [("bell_1", "bell", "test"), ("dog_1", "dog", "test")]
    project = _project(tmp_path / "p", clips, {"dog_1": _tone(1)}, packed={"bell_1": _tone(1, 700)})
    pack = project / "data" / "audio" / PACK_DIR / "pack-00000.parquet"
    pack.write_bytes(b"PAR1 not really a pack " * 10)
    with caplog.at_level(logging.INFO, logger="a2i_core.serve.examples"):
        examples = _project_examples(project, tmp_path / "out")
    assert [e.label for e in examples] == ["dog"]
    (line,) = [line for line in _skips(caplog).splitlines() if line.startswith("example skipped: bell (bell_1): ")]
    assert "cannot read packed clip" in line and str(pack) in line


@pytest.mark.parametrize("damage", ["no data", "no manifest", "garbage table", "not candidates", "no test split"])
def test_a_project_without_usable_data_offers_none_and_says_why(tmp_path, caplog, damage):
    project = _project(tmp_path / "p", [("dog_1", "dog", "train" if damage == "no test split" else "test")],
                       {"dog_1": _tone(1)})
    data = project / "data"
    if damage == "no data":
        os.rename(data, tmp_path / "elsewhere")
    elif damage == "no manifest":
        (data / "audio" / "manifest.parquet").unlink()
    elif damage == "garbage table":
        (data / "candidates.parquet").write_bytes(b"PAR1 not really")
    elif damage == "not candidates":
        os.replace(data / "audio" / "manifest.parquet", data / "candidates.parquet")
    with caplog.at_level(logging.INFO, logger="a2i_core.serve.examples"):
        assert _project_examples(project, tmp_path / "out") == []
    assert "no example sounds from the project: " in _skips(caplog)
    assert not (tmp_path / "out").exists()


def hostile_folder(folder: Path) -> dict[str, str | None]:
    """Every kind of entry a user's folder can hold, and how each must end: None (offered) or part of its reason."""
    folder.mkdir()
    expected: dict[str, str | None] = {}

    def entry(name: str, outcome: str | None) -> Path:
        expected[name] = outcome
        return folder / name

    write_wav(entry("good.wav", None), _tone(2))
    sf.write(entry("sirène d'été 1.flac", None), _tone(2, 660), SAMPLE_RATE)  # spaces, accents, a quote
    write_wav(entry("long.wav", None), _tone(30, 500))  # cut to EXAMPLE_SECONDS
    unreadable = entry("unreadable.wav", None if os.geteuid() == 0 else "permission denied")
    write_wav(unreadable, _tone(2, 250))
    unreadable.chmod(0)  # root reads it all the same: then it is simply a sound
    entry("notes.txt", "not an audio file name (.txt").write_text("not a sound")
    entry("fake.wav", "cannot decode audio").write_bytes(b"RIFF but not really audio " * 40)
    write_wav(entry("silent.wav", "silent"), np.zeros(SAMPLE_RATE, np.float32))
    write_wav(entry("blip.wav", "too short to hear"), _tone(0.05))
    entry("loop1.wav", "is a symbolic link loop").symlink_to(folder / "loop2.wav")
    entry("loop2.wav", "is a symbolic link loop").symlink_to(folder / "loop1.wav")
    entry("dangling.wav", "is a symbolic link to").symlink_to(folder / "nothing.wav")
    os.mkfifo(entry("pipe.wav", "is a named pipe"))  # opening it to read would wait for a writer forever
    entry("folder.wav", "a folder").mkdir()
    write_wav(entry(".hidden.wav", "hidden file"), _tone(1))
    entry("\u202eevil\nname.wav", "cannot decode audio").write_bytes(b"\0" * 100)  # controls never reach the log
    return expected


def shown_name(name: str) -> str:
    """A file name as the log shows it: one printable line, whatever the name holds."""
    return printable(name)


def test_a_hostile_folder_is_skipped_entry_by_entry_with_reasons(tmp_path, caplog):
    expected = hostile_folder(tmp_path / "mine")
    out = tmp_path / "app" / "examples"
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="a2i_core.serve.examples"):
        examples = folder_examples(tmp_path / "mine", out)
    assert time.monotonic() - start < 30  # the pipe, above all, did not block
    offered = sorted(name for name, outcome in expected.items() if outcome is None)
    assert [e.label for e in examples] == offered  # by name, shown as named
    assert all(e.path.parent == out and e.path.is_file() for e in examples)
    assert len(_wav(next(e.path for e in examples if e.label == "long.wav"))) == EXAMPLE_SECONDS * SAMPLE_RATE
    lines = _skips(caplog).splitlines()
    for name, reason in expected.items():
        if reason is not None:
            (line,) = [line for line in lines if line.startswith(f"example skipped: {shown_name(name)}: ")]
            assert reason in line and line.isprintable(), (name, line)


def test_a_folder_offers_its_first_eight_sounds_under_distinct_names(tmp_path, caplog):
    folder = tmp_path / "many"
    folder.mkdir()
    write_wav(folder / "a.wav", _tone(1, 300))
    sf.write(folder / "a.flac", _tone(1, 600), SAMPLE_RATE)  # same stem: its own file, not a.wav's
    for i in range(MAX_EXAMPLES + 1):
        write_wav(folder / f"s{i}.wav", _tone(1, 200 + 40 * i))
    with caplog.at_level(logging.INFO, logger="a2i_core.serve.examples"):
        examples = folder_examples(folder, tmp_path / "out")
    assert [e.label for e in examples] == ["a.flac", "a.wav"] + [f"s{i}.wav" for i in range(MAX_EXAMPLES - 2)]
    assert len({e.path for e in examples}) == MAX_EXAMPLES
    np.testing.assert_allclose(_wav(examples[0].path), _tone(1, 600), atol=1e-3)
    np.testing.assert_allclose(_wav(examples[1].path), _tone(1, 300), atol=1e-3)
    assert "3 more of 11 entries: not tried (at most 8 examples" in _skips(caplog)


def test_names_differing_only_in_case_get_distinct_files(tmp_path):
    """On a case-insensitive file system (macOS, Windows) Dog.wav and dog.flac would otherwise write one file."""
    folder = tmp_path / "cases"
    folder.mkdir()
    write_wav(folder / "Dog.wav", _tone(1, 300))
    sf.write(folder / "dog.flac", _tone(1, 600), SAMPLE_RATE)
    examples = folder_examples(folder, tmp_path / "out")
    assert [e.label for e in examples] == ["Dog.wav", "dog.flac"]
    assert len({e.path.name.casefold() for e in examples}) == 2
    np.testing.assert_allclose(_wav(examples[0].path), _tone(1, 300), atol=1e-3)
    np.testing.assert_allclose(_wav(examples[1].path), _tone(1, 600), atol=1e-3)
    # Classes too: labels "Dog" and "dog" are two examples, two files.
    project = _project(tmp_path / "p", [("a_1", "Dog", "test"), ("b_1", "dog", "test")],
                       {"a_1": _tone(1, 300), "b_1": _tone(1, 600)})
    examples = _project_examples(project, tmp_path / "out2")
    assert [e.label for e in examples] == ["Dog", "dog"]
    assert len({e.path.name.casefold() for e in examples}) == 2


def test_a_folder_that_cannot_be_listed_is_an_error(tmp_path):
    with pytest.raises(A2IError, match=r"^--examples .*nowhere: cannot list it \(No such file or directory\)$"):
        folder_examples(tmp_path / "nowhere", tmp_path / "out")
