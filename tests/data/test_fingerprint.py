"""Fingerprints of the local files params name: the same bytes while the files are the same, new bytes when one is
added, replaced or removed; a link loop, hidden files and special files do not count."""

from __future__ import annotations

import logging
import os

from a2i_core.core.params import params_from_dict
from a2i_core.data.fingerprint import Digests, fingerprint, local_paths, write_fingerprint
from a2i_core.pipeline.sources import reader_paths, sources


def _tree(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def test_a_fingerprint_changes_exactly_when_the_files_do(tmp_path):
    root = tmp_path / "sounds"
    _tree(root, {"dog/a.wav": b"woof", "bell/b.wav": b"ding", "dog/.b.wav": b"hidden"})
    os.symlink(root, root / "dog" / "loop")  # a link to a folder is not walked (ingest's rglob does not), so no loop
    os.symlink(root / "dog" / "a.wav", root / "bell" / "link.wav")  # a link to a file is its file (DVC's cache)
    unreadable = root / "bell" / "locked.wav"
    unreadable.write_bytes(b"x")
    unreadable.chmod(0)
    digests = Digests(tmp_path / "cache.json")
    out = tmp_path / "fp.json"
    write_fingerprint(out, [str(root), "Dog", "an image of a {name}"], digests)  # strings that name nothing: skipped
    first = out.read_bytes()
    found = fingerprint([str(root)], digests)[str(root)]
    assert set(found) == {"bell/b.wav", "bell/link.wav", "bell/locked.wav", "dog/a.wav", "dog/.b.wav"}
    assert found["bell/link.wav"] == found["dog/a.wav"]
    if os.geteuid() != 0:  # root reads it all the same
        assert found["bell/locked.wav"] == "unreadable: Permission denied"

    write_fingerprint(out, [str(root)], digests)
    assert out.read_bytes() == first
    for change in (lambda: (root / "dog/a.wav").write_bytes(b"grr"), lambda: (root / "cat.wav").write_bytes(b"m"),
                   lambda: (root / "cat.wav").unlink()):
        change()
        write_fingerprint(out, [str(root)], digests)
        assert out.read_bytes() != first
        first = out.read_bytes()


def test_a_path_not_on_this_machine_keeps_its_last_fingerprint(tmp_path, caplog):
    # A teammate who pulled the outputs but not the recordings: the readers stay up to date, with a warning.
    root = tmp_path / "sounds"
    _tree(root, {"dog/a.wav": b"woof"})
    out = tmp_path / "fp.json"
    write_fingerprint(out, [str(root)], Digests(tmp_path / "cache.json"))
    first = out.read_bytes()
    (root / "dog" / "a.wav").unlink()
    (root / "dog").rmdir()
    root.rmdir()
    with caplog.at_level(logging.WARNING):
        write_fingerprint(out, [str(root)], Digests(tmp_path / "cache.json"))
    assert out.read_bytes() == first
    assert f"{root}: not on this machine: its fingerprint from the last run is kept" in caplog.text


def test_digests_are_cached_by_size_time_and_inode(tmp_path):
    path = tmp_path / "a.wav"
    path.write_bytes(b"1234")
    digests = Digests(tmp_path / "cache.json")
    digest = digests.of(path)
    digests.save()
    stamp = path.stat()
    path.write_bytes(b"5678")  # same size; the same time put back: only the cache can answer the same
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert Digests(tmp_path / "cache.json").of(path) == digest
    path.write_bytes(b"56789")
    assert Digests(tmp_path / "cache.json").of(path) != digest
    (tmp_path / "cache.json").write_text("{not json")  # a damaged cache is ignored, not fatal
    assert Digests(tmp_path / "cache.json").of(path) == Digests(tmp_path / "other.json").of(path)


def test_only_local_paths_are_fingerprinted(raw_params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tree(tmp_path, {"mine/dog/a.wav": b"woof", "release/x.tfrecord": b"rec", "caps.csv": b"id\n"})
    raw_params["data"].update(source="audiocaps", audiocaps={"csv": ["caps.csv", "https://example.org/c.csv",
                                                                     "missing.csv"]})
    raw_params["audio_encoder"]["release"] = "release"
    raw_params["eval_sets"] = {"mine": {"source": "folder", "folder": {"root": "mine"}}}
    params = params_from_dict(raw_params)
    assert local_paths(params.data.audiocaps) == ["caps.csv", "missing.csv"]  # written only if they exist
    assert reader_paths(params) == {"data.json": ["caps.csv", "missing.csv"], "release.json": ["release"],
                                    "eval_set_mine.json": ["mine"]}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "eval_set_gone.json").write_text("{}")  # a set no longer in params
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sources(params, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["data.json", "eval_set_mine.json",
                                                                     "release.json"]
