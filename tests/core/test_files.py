import json
import logging
import os
import threading
import time

import numpy as np
import pytest

from a2i_core.core.files import atomic_dir, atomic_path, write_json


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_dir_replaces_whole(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    (target / "stale").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "new").write_text("y")
    assert [p.name for p in target.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_outputs_get_the_usual_permissions(tmp_path):
    with atomic_path(tmp_path / "f.json") as tmp:
        tmp.write_text("{}")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("y")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's owner-only 0o600
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask


def test_replace_dir_never_leaves_the_path_missing(tmp_path):
    from a2i_core.core.files import replace_dir

    target = tmp_path / "out"
    target.mkdir()
    (target / "v").write_text("0")
    seen, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(target.is_dir())

    watcher = threading.Thread(target=watch)
    watcher.start()
    for i in range(1, 200):
        new = tmp_path / f"new{i}"
        new.mkdir()
        (new / "v").write_text(str(i))
        replace_dir(new, target)
    stop.set()
    watcher.join()
    assert (target / "v").read_text() == "199" and all(seen) and len(seen) > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # every old version deleted


def test_a_reader_never_sees_a_missing_or_mixed_mapper_while_it_is_rewritten(tmp_path):
    # Two artifacts that differ in every file; a reader loading in a loop while a writer alternates them must
    # always get one of the two whole, never an error or a mix.
    from a2i_core.mapper.artifact import MapperArtifact
    from a2i_core.mapper.model import AudioToSD3Mapper, MapperConfig
    from tests.mapper.test_model import PROVENANCE

    def artifact(width: int) -> MapperArtifact:
        mapper = AudioToSD3Mapper(MapperConfig(in_dim=8, pooled_dim=4, hidden=[width], dropout=[0.0],
                                               provenance=PROVENANCE))
        return MapperArtifact(mapper, np.full(4, width, np.float32), np.zeros((3, 2), np.float32),
                              [f"prompt {width}"], np.ones((1, 4), np.float32))

    versions = [artifact(16), artifact(32)]
    path = tmp_path / "mapper"
    versions[0].save(path)
    results, errors, stop = [], [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                loaded = MapperArtifact.load(path)
            except Exception as err:  # noqa: BLE001 - any failure is what this test looks for
                errors.append(repr(err))
                continue
            width = loaded.mapper.config.hidden[0]
            results.append(loaded.prompts == [f"prompt {width}"] and float(loaded.empty_pooled[0]) == width)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(60):
        versions[i % 2].save(path)
        time.sleep(0.01)  # still far more often than any retrain, but a loaded machine's reader gets a turn
    stop.set()
    reader.join()
    assert not errors, errors[:3]
    assert results and all(results)


def test_metric_files_are_strict_json_whatever_the_numbers(tmp_path, caplog):
    # Before: a diverged loss was written as a bare NaN, which dvc metrics, jq and browsers refuse to parse.
    path = tmp_path / "metrics" / "train.json"
    with caplog.at_level(logging.WARNING):
        write_json(path, {"loss": float("nan"), "per_epoch": [1.0, np.float64("inf")], "ok": 0.5,
                          "nested": {"x": -np.inf}})

    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data == {"loss": None, "per_epoch": [1.0, None], "ok": 0.5, "nested": {"x": None}}
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: loss is nan: written as null", f"{path}: per_epoch[1] is inf: written as null",
        f"{path}: nested.x is -inf: written as null"]
