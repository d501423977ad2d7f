"""Getting a trained mapper somewhere else: by `dvc artifacts get` from the team's DVC remote (no clone), and by its
Hugging Face Hub id, which MapperArtifact.load and `a2i generate --mapper` take in place of a folder.

Nothing here reaches a network: the DVC remote is moto's S3 server on 127.0.0.1 (tests/pipeline/test_remote.py's),
Studio is off, and the Hub is a Hugging Face cache filled in huggingface_hub's own layout, read with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from a2i_core.core.errors import A2IError
from a2i_core.mapper.artifact import CARD_NAME, FILES, PROMPT_SEQUENCES_NAME, MapperArtifact
from a2i_core.mapper.model import AudioToSD3Mapper
from a2i_core.offline.workspace import tool_env
from tests.conftest import ROOT
from tests.helpers import dvc
from tests.mapper.test_model import PROVENANCE
from tests.pipeline.test_remote import BUCKET, _env, _run, s3  # noqa: F401 (s3: the moto S3 server fixture)

REPO_ID = "a2i-tests/demo-mapper"  # never asked of the real Hub: the tests run offline


# --- the Hub -------------------------------------------------------------------------------------------------------


def hub_cache(cache: Path, repo_id: str, folder: Path, refs: tuple[str, ...] = ("main",)) -> str:
    """Put ``folder`` into the Hugging Face cache ``cache`` as a snapshot of model ``repo_id``, in the layout
    huggingface_hub downloads into (blobs named by content, snapshot files linking to them, refs naming the commit);
    returns the commit. huggingface_hub's own cache scanner then checks that it reads it as a download."""
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    digests = {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in files}
    commit = hashlib.sha1("".join(f"{f}:{d}\n" for f, d in digests.items()).encode()).hexdigest()
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    for name, digest in digests.items():
        blob = storage / "blobs" / digest  # an LFS file's blob is named by its sha256
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / name, blob)
        link = storage / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (storage / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)  # the bare hash, no newline, as huggingface_hub writes it

    info = scan_cache_dir(cache)
    assert not info.warnings, info.warnings
    (repo,) = [r for r in info.repos if r.repo_id == repo_id]
    (revision,) = repo.revisions
    assert revision.commit_hash == commit and set(revision.refs) == set(refs)
    assert {Path(f.file_path).relative_to(revision.snapshot_path) for f in revision.files} == set(files)
    assert try_to_load_from_cache(repo_id, files[0].as_posix(), cache_dir=cache) == str(storage / "snapshots" / commit
                                                                                       / files[0])
    return commit


def _offline_env(cache: Path) -> dict[str, str]:
    # HF_ENDPOINT on a closed local port: were offline mode ever ignored, a request would fail here, not go out.
    env = {k: v for k, v in tool_env().items() if not k.startswith(("HF_", "HUGGING"))}
    return {**env, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
            "PYTHONPATH": str(ROOT)}


SAME_WEIGHTS = """
import sys, torch
from a2i_core.mapper.artifact import MapperArtifact
folder = MapperArtifact.load(sys.argv[1])
for location in sys.argv[2:]:
    hub = MapperArtifact.load(location)
    pairs = zip(folder.mapper.state_dict().items(), hub.mapper.state_dict().items(), strict=True)
    assert all(a == b and torch.equal(x, y) for (a, x), (b, y) in pairs), location
    assert hub.mapper.config == folder.mapper.config and hub.prompts == folder.prompts, location
    assert (hub.empty_sequence == folder.empty_sequence).all() and (hub.prompt_pooled == folder.prompt_pooled).all()
    print("same:", location)
"""


def test_a_mapper_loads_by_hub_id_from_the_cache_offline(demo_workspace, tmp_path):
    mapper = demo_workspace[0] / "models/mapper"
    commit = hub_cache(tmp_path / "hf", REPO_ID, mapper, refs=("main", "v1"))
    ids = [REPO_ID, f"{REPO_ID}@v1", f"{REPO_ID}@{commit}"]
    result = subprocess.run([sys.executable, "-c", SAME_WEIGHTS, str(mapper), *ids], cwd=tmp_path,
                            env=_offline_env(tmp_path / "hf"), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.split("\n")[:3] == [f"same: {i}" for i in ids]


def test_a2i_generate_takes_a_hub_id(demo_workspace, tmp_path):
    ws, mapper = demo_workspace[0], demo_workspace[0] / "models/mapper"
    hub_cache(tmp_path / "hf", REPO_ID, mapper)
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    outs = {}
    for name, given in (("hub", REPO_ID), ("folder", str(mapper))):
        outs[name] = tmp_path / name
        result = subprocess.run([sys.executable, "-m", "a2i_core.cli", "generate", "tone.wav", "--mapper", given,
                                 "--project", str(ws), "--out", str(outs[name]), "--device", "cpu"],
                                cwd=tmp_path, env=_offline_env(tmp_path / "hf"), capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert sorted(p.name for p in outs["hub"].iterdir()) == ["tone.png"]
    # Same mapper, same image: the same pixels (the PNGs' text records each run's own render time).
    with Image.open(outs["hub"] / "tone.png") as a, Image.open(outs["folder"] / "tone.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))

    # The card's own Python example, with the demo's models, a Hub id and a small image.
    card = (mapper / CARD_NAME).read_text(encoding="utf-8")
    example = card.split("```python\n", 1)[1].split("```", 1)[0]
    example = (example.replace('"owner/name"', f'"{REPO_ID}"').replace('"models/', f'"{ws / "models"}/')
               .replace('Path("sound.wav")', 'Path("tone.wav")').replace("steps=28", "steps=2")
               .replace("size=1024", "size=64"))
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=_offline_env(tmp_path / "hf"),
                            capture_output=True, text=True)
    assert result.returncode == 0, example + result.stdout[-2000:] + result.stderr[-3000:]
    assert (tmp_path / "sound.png").is_file()


def _small_artifact() -> MapperArtifact:
    from a2i_core.mapper.model import MapperConfig

    mapper = AudioToSD3Mapper(MapperConfig(in_dim=8, pooled_dim=4, hidden=[16], dropout=[0.1], provenance=PROVENANCE))
    return MapperArtifact(mapper, np.zeros(4, np.float32), np.zeros((3, 2), np.float32), ["a"], np.ones((1, 4),
                                                                                                        np.float32))


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """huggingface_hub offline, on an empty cache, in this process (its constants are read at import: patched)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_local_folder_wins_over_a_hub_id(no_hub, monkeypatch):
    import huggingface_hub

    _small_artifact().save(no_hub / "owner" / "name")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("the Hub was asked"))
    assert MapperArtifact.load("owner/name").prompts == ["a"]
    assert MapperArtifact.load(Path("owner/name")).prompts == ["a"]


@pytest.mark.parametrize("location", ["no-such-folder", "a/b/c", "owner/name@../../etc", "owner/-name", "owner//name",
                                      "owner/name@", "https://user:s3cret@hf.co/x?t=s3cret"])
def test_neither_a_folder_nor_a_hub_id_is_one_clear_line(no_hub, location):
    with pytest.raises(A2IError) as err:
        MapperArtifact.load(location)
    message = str(err.value)
    assert "no such mapper folder, and not a Hub id (owner/name or owner/name@revision)" in message
    assert "\n" not in message and "s3cret" not in message


@pytest.fixture
def hub_refused(no_hub, monkeypatch):
    """As no_hub, and any download from the Hub fails the test."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail(f"the Hub was asked: {a}"))
    return no_hub


@pytest.mark.parametrize("location", ["./x/y", "../x", "./owner/name", "/nowhere/at/all", "~/no/such/mapper",
                                      Path("/nowhere/at/all"), ".hidden/name"])
def test_a_path_is_never_taken_for_a_hub_id(hub_refused, location):
    with pytest.raises(A2IError) as err:
        MapperArtifact.load(location)
    shown = location.as_posix() if isinstance(location, Path) else location
    # One line naming the path (and, were the tests' temporary folder inside a DVC project, how to fetch it).
    assert re.fullmatch(rf"{re.escape(shown)}: no such mapper folder(; if it is this DVC project's output, .*)?",
                        str(err.value))


@pytest.mark.parametrize("location", ["models/mapper", Path("./models/mapper"), "models/mapper@v1"])
def test_a_missing_folder_under_a_local_one_is_no_hub_id(hub_refused, location):
    # A fresh clone before `dvc pull` (or a `dvc checkout` halfway): models/ is here, models/mapper not yet. Whoever
    # owns "models/mapper" on the Hub must not be loaded in its place; typer hands "./models/mapper" over as this Path.
    (hub_refused / "models").mkdir()
    shown = Path(location).as_posix() if isinstance(location, Path) else location
    expected = f"{shown}: no such mapper folder (models/ is a folder here, so this is a path, not a Hub id)"
    with pytest.raises(A2IError) as err:
        MapperArtifact.load(location)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)
    (hub_refused / "dvc.yaml").write_text("stages: {}\n")  # in a DVC project: say how to get the folder
    with pytest.raises(A2IError) as err:
        MapperArtifact.load(location)
    assert str(err.value) == (f"{expected}; if it is this DVC project's output, `dvc pull` fetches it (or `dvc repro` "
                              "makes it)")


def test_only_the_mappers_files_are_downloaded(no_hub, monkeypatch):
    import fnmatch

    import huggingface_hub

    folder = no_hub / "saved"
    _small_artifact().save(folder, "card\n")
    (folder / "notes.bin").write_bytes(b"x" * 100)  # anything else in the repo: not downloaded
    calls = []

    def download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, allow_patterns, kwargs))
        out = no_hub / "snapshot" / str(len(calls))
        out.mkdir(parents=True)
        for file in folder.iterdir():  # what the Hub sends: the files the patterns allow
            if allow_patterns is None or any(fnmatch.fnmatch(file.name, p) for p in allow_patterns):
                shutil.copyfile(file, out / file.name)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    assert MapperArtifact.load("owner/name").prompts == ["a"]
    assert MapperArtifact.load("owner/name@v1").prompts == ["a"]
    assert calls == [("owner/name", None, FILES, {}), ("owner/name", "v1", FILES, {})]
    # All the mapper's files, less the optional prompt sequences this one was saved without.
    assert sorted(p.name for p in (no_hub / "snapshot" / "1").iterdir()) == sorted(set(FILES) - {PROMPT_SEQUENCES_NAME})


def test_a_file_in_place_of_a_folder_is_refused(no_hub):
    (no_hub / "mapper.safetensors").write_bytes(b"x")
    with pytest.raises(A2IError, match="mapper.safetensors: not a directory"):
        MapperArtifact.load("mapper.safetensors")


def test_an_id_missing_from_the_cache_offline_says_so(no_hub):
    with pytest.raises(A2IError, match=r"^nobody/nothing@v2: no such mapper folder here, nor in the Hugging Face "
                                       r"cache, and HF_HUB_OFFLINE is set"):
        MapperArtifact.load("nobody/nothing@v2")


def _hub_error(kind: str):
    import httpx2
    from huggingface_hub import errors

    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/api/models/o/n"))
    return {"gated": errors.GatedRepoError("gated", response=response),
            "missing": errors.RepositoryNotFoundError("404", response=response),
            "revision": errors.RevisionNotFoundError("404", response=response),
            "network": errors.LocalEntryNotFoundError("no connection"),
            "other": OSError("boom at https://user:s3cret@proxy.example/x")}[kind]


@pytest.mark.parametrize(("kind", "expected"), [
    ("gated", r"^o/n is gated: accept its licence on the Hub, then run `hf auth login`$"),
    ("missing", r"^o/n: no such mapper folder here, nor model on the Hub \(or it is private"),
    ("revision", r"^o/n@v9: the Hub has no revision 'v9' of it$"),
    ("network", r"^o/n: no such mapper folder here, nor in the Hugging Face cache, and the Hub cannot be reached$"),
    ("other", r"^cannot download o/n from the Hub: boom at https://REDACTED@proxy.example/x$"),
])
def test_hub_failures_are_one_line(monkeypatch, tmp_path, kind, expected):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def refuse(repo_id, revision=None, **kwargs):
        raise _hub_error(kind)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(A2IError, match=expected):
        MapperArtifact.load("o/n@v9" if kind == "revision" else "o/n")


# --- dvc artifacts get ---------------------------------------------------------------------------------------------


def _no_studio_env(server: dict, home: Path) -> dict[str, str]:
    """The S3 key in the environment (never in git, never on a command line); Studio off and pointed nowhere, and no
    user or system DVC config (where a Studio token could be) read."""
    env = {k: v for k, v in _env().items() if "STUDIO" not in k}
    return {**env, "AWS_ACCESS_KEY_ID": server["key"], "AWS_SECRET_ACCESS_KEY": server["secret"],
            "DVC_STUDIO_OFFLINE": "1", "DVC_STUDIO_URL": "http://127.0.0.1:9",
            "DVC_GLOBAL_CONFIG_DIR": str(home / "global"), "DVC_SYSTEM_CONFIG_DIR": str(home / "system")}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.e2e
def test_dvc_artifacts_get_fetches_the_mapper_from_the_remote(demo_workspace, s3, tmp_path):  # noqa: F811
    ws = demo_workspace[0]
    env = _no_studio_env(s3, tmp_path)
    # The team's repository: the demo run, its outputs from the demo's cache, pushed to the S3 remote.
    repo = tmp_path / "team"
    _run(tmp_path, "git", "clone", "-q", str(ws), str(repo))
    for args in (("cache", "dir", "--local", str(ws / ".dvc" / "cache")), ("checkout", "models/mapper"),
                 ("remote", "add", "-d", "team", f"s3://{BUCKET}/a2i"),
                 ("remote", "modify", "--local", "team", "endpointurl", s3["url"]), ("push", "models/mapper")):
        dvc(repo, *args, env=env)
    _run(repo, "git", "commit", "-qam", "Add the team's DVC remote")
    committed = (repo / ".dvc" / "config").read_text()
    assert s3["secret"] not in committed and s3["key"] not in committed and s3["url"] not in committed

    # Someone else, in an empty directory: no clone, no DVC repository, only the repository's URL and the remote.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = repo.as_uri()

    def get(name: str, out: str, *more: str) -> subprocess.CompletedProcess:
        return dvc(elsewhere, "artifacts", "get", url, name, "-o", out, "--remote-config", f"endpointurl={s3['url']}",
                   *more, env=env, ok=False)

    # `dvc artifacts get` takes a registered version (GTO's annotated tag name@vX.Y.Z), the latest by default.
    assert "Unable to find artifact 'mapper'" in get("mapper", "mapper").stderr
    _run(repo, "git", "tag", "-a", "mapper@v0.1.0", "-m", "Register mapper v0.1.0")  # what `gto register` makes
    got = get("mapper", "mapper")
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-2000:]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["mapper"]  # before the versions below
    assert _files(elsewhere / "mapper") == _files(ws / "models/mapper") and CARD_NAME in _files(elsewhere / "mapper")
    artifact = MapperArtifact.load(elsewhere / "mapper")
    reference = MapperArtifact.load(ws / "models/mapper")
    assert all(torch.equal(a, b) for a, b in zip(artifact.mapper.state_dict().values(),
                                                 reference.mapper.state_dict().values(), strict=True))

    # A chosen version is `--rev vX.Y.Z` (docs/sharing.md shows it); the tag's own name is not an artifact's name.
    pinned = get("mapper", "pinned", "--rev", "v0.1.0")
    assert pinned.returncode == 0 and _files(elsewhere / "pinned") == _files(ws / "models/mapper"), pinned.stderr
    assert get("mapper@v0.1.0", "tagname").returncode != 0 and not (elsewhere / "tagname").exists()

    # A name the repository does not declare: DVC's own error, nothing written.
    wrong = get("no-such-model", "other")
    assert wrong.returncode != 0
    assert "Unable to find artifact 'no-such-model'" in wrong.stderr, wrong.stderr[-2000:]
    assert not (elsewhere / "other").exists()
