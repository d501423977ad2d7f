"""Shared fixtures: tiny encoders are built once per session, through the real preparation code."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from a2i_core.core.params import merge_overlay, params_from_dict, read_yaml
from a2i_core.offline.audio_encoder import build_audio_encoder
from a2i_core.offline.encoders import build_sd3

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_PROFILE = ROOT / "profiles" / "offline.yaml"
OFFLINE = params_from_dict(merge_overlay(read_yaml(ROOT / "params.yaml"), read_yaml(OFFLINE_PROFILE)))


def offline(section: str, **changes):
    """A params section of the offline profile with ``changes``: tests never spell out every field."""
    return dataclasses.replace(getattr(OFFLINE, section), **changes)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end, so outside `-m "not e2e"` (make test-fast): a test that needs the demo workspace (directly or
    through another fixture: it runs the real `dvc repro` once per session), and the benchmark scripts' runs."""
    benchmarks = ROOT / "tests" / "benchmarks"
    for item in items:
        if "demo_workspace" in getattr(item, "fixturenames", ()) or benchmarks in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """a2i's cache (downloads, extracted archives) in a temporary folder: tests never touch the user's own, and
    stage subprocesses inherit it."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


@pytest.fixture(scope="session")
def offline_raw() -> dict:
    """params.yaml with the offline overlay merged in, as plain data: what the demo's params.yaml holds."""
    return merge_overlay(read_yaml(ROOT / "params.yaml"), read_yaml(OFFLINE_PROFILE))


@pytest.fixture
def raw_params(offline_raw: dict) -> dict:
    """A fresh, mutable copy of the offline profile as plain data."""
    return copy.deepcopy(offline_raw)


@pytest.fixture(scope="session")
def offline_params(offline_raw: dict):
    return params_from_dict(offline_raw)


@pytest.fixture(scope="session")
def tiny_vggish_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "vggish"
    build_audio_encoder(offline("audio_encoder", pca="tiny", postprocess=True), out)
    return out


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "sd3"
    build_sd3("tiny", out)
    return out


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The offline pipeline, run once through `a2i demo` (the real `dvc repro`) in a temp repo.

    Returns the workspace and what the run printed. Tests that change the workspace must work on a copy.
    """
    from a2i_core.offline.workspace import tool_env

    tmp = tmp_path_factory.mktemp("demo")
    profile = YAML(typ="safe", pure=True).load(OFFLINE_PROFILE.read_text())
    # The demo's data, training and rendering as `make demo` has them: README's figures and contact sheet are this
    # run's (tests/pipeline/test_readme_figures.py). Only the shards differ, cut smaller so that
    # tests/pipeline/test_distributed.py can spread several over 2 processes (their contents do not change).
    profile["audio_encoder"]["shard_rows"] = 64
    profile["diffusion"]["shard_rows"] = 3
    with open(tmp / "profile.yaml", "w") as f:
        YAML().dump(profile, f)
    result = subprocess.run([sys.executable, "-m", "a2i_core.cli", "demo", "--workspace", str(tmp / "ws"),
                             "--profile", str(tmp / "profile.yaml")], env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp / "ws", result.stdout + result.stderr
