"""A mapper folder's tensors from outside (a pull, a copy, a hand edit) are checked when loaded, in one line.

Before: NaN or infinite weights, NaN prompt sequences and int64 weights all loaded, and generate exited 0 with an
all-black image and ``nan`` cosines; a config just under the parameter cap built its 4 GB model (8 s) before the
weights' header was compared with it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from a2i_core.core.errors import A2IError
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.mapper.model import MAX_HEADER_BYTES, AudioToSD3Mapper, MapperConfig
from a2i_core.offline.workspace import tool_env
from tests.mapper.test_model import PROVENANCE


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    mapper = AudioToSD3Mapper(MapperConfig(in_dim=8, pooled_dim=4, hidden=[16], dropout=[0.1], provenance=PROVENANCE))
    rng = np.random.default_rng(0)
    directory = tmp_path_factory.mktemp("pristine") / "mapper"
    MapperArtifact(mapper, np.zeros(4, np.float32), np.zeros((3, 2), np.float32), ["a", "b"],
                   rng.normal(size=(2, 4)).astype(np.float32),
                   rng.normal(size=(2, 3, 2)).astype(np.float16)).save(directory)
    return directory


@pytest.fixture
def artifact(pristine, tmp_path) -> Path:
    shutil.copytree(pristine, tmp_path / "mapper")
    return tmp_path / "mapper"


def _edit(path: Path, change) -> Path:
    tensors = {k: v.clone() for k, v in load_file(str(path)).items()}  # not views of the file it rewrites
    change(tensors)
    save_file(tensors, str(path))
    return path


def _set(name: str, index: tuple[int, ...], value: float):
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[name][index] = value
    return change


def _refused(directory: Path) -> str:
    with pytest.raises(A2IError) as err:
        MapperArtifact.load(directory)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


CASES = {
    "nan weight": ("model.safetensors", _set("net.0.weight", (3, 5), float("nan")),
                   "net.0.weight[3, 5] is nan: a mapper's values are all finite"),
    "inf weight": ("model.safetensors", _set("net.4.bias", (1,), float("-inf")),
                   "net.4.bias[1] is -inf: a mapper's values are all finite"),
    "nan input mean": ("model.safetensors", _set("input_mean", (7,), float("nan")),
                       "input_mean[7] is nan: a mapper's values are all finite"),
    "zero input std": ("model.safetensors", _set("input_std", (2,), 0.0),
                       "input_std[2] is 0, but a trained mapper's are at least 1e-06 (it divides by them)"),
    "int64 weight": ("model.safetensors", lambda t: t.update({"net.0.weight": t["net.0.weight"].to(torch.int64)}),
                     "net.0.weight: dtype I64, but a mapper's file holds F32"),
    "float16 weight": ("model.safetensors", lambda t: t.update({"net.0.bias": t["net.0.bias"].half()}),
                       "net.0.bias: dtype F16, but a mapper's file holds F32"),
    "nan prompt sequence": ("prompt_sequences.safetensors", _set("sequence", (1, 2, 0), float("nan")),
                            "sequence[1, 2, 0] is nan: a mapper's values are all finite"),
    "float32 prompt sequences": ("prompt_sequences.safetensors",
                                 lambda t: t.update(sequence=t["sequence"].float() * 1e6),  # inf once halved
                                 "sequence: dtype F32, but a mapper's file holds F16"),
    "nan prompt bank": ("prompt_bank.safetensors", _set("pooled", (0, 1), float("nan")),
                        "pooled[0, 1] is nan: a mapper's values are all finite"),
    "inf guidance": ("guidance.safetensors", _set("empty_sequence", (2, 1), float("inf")),
                     "empty_sequence[2, 1] is inf: a mapper's values are all finite"),
    "int64 prompt bank": ("prompt_bank.safetensors", lambda t: t.update(pooled=t["pooled"].long()),
                          "pooled: dtype I64, but a mapper's file holds F32"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_tampered_tensor_is_refused_naming_file_and_tensor(artifact, case):
    name, change, expected = CASES[case]
    path = _edit(artifact / name, change)
    assert _refused(artifact) == f"{path}: {expected}"


def test_a_good_artifact_loads_with_its_dtypes(artifact):
    # An input feature that never varied is clamped to exactly the minimum standard deviation: still accepted.
    path = artifact / "model.safetensors"
    _edit(path, _set("input_std", (0,), torch.tensor(1e-6, dtype=torch.float32).item()))
    loaded = MapperArtifact.load(artifact)
    assert loaded.prompt_sequences.dtype == np.float16 and loaded.prompt_pooled.dtype == np.float32
    assert loaded.mapper.input_std[0] == torch.tensor(1e-6)


def test_a_header_longer_than_any_mapper_needs_is_refused_before_parsing(artifact):
    # A valid file, its header padded with spaces as the format allows: safetensors would parse up to 100 MB (20 s).
    path = artifact / "prompt_bank.safetensors"
    pooled = load_file(str(path))["pooled"].clone()  # load_file maps the file: a copy, before rewriting it
    header = json.dumps({"pooled": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]}}).encode()
    header = header.ljust(MAX_HEADER_BYTES + 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + pooled.numpy().tobytes())
    assert torch.equal(load_file(str(path))["pooled"], pooled)
    assert _refused(artifact) == (f"{path}: a safetensors header of {MAX_HEADER_BYTES + 8} bytes, but a mapper's "
                                  f"is at most {MAX_HEADER_BYTES}")


def test_loaded_tensors_are_not_views_of_the_files(artifact):
    # A file rewritten in place (a plain cp over it) must not change a running model, nor crash it when truncated.
    loaded = MapperArtifact.load(artifact)
    before = loaded.prompt_pooled.copy(), loaded.mapper.net[0].weight.detach().clone()
    for name in ["prompt_bank.safetensors", "model.safetensors"]:
        path = artifact / name
        tensors = {k: torch.full_like(v, 7) for k, v in load_file(str(path)).items()}
        save_file(tensors, str(artifact / "other"))
        with open(path, "r+b") as f:  # same inode, new bytes
            f.write((artifact / "other").read_bytes())
    assert np.array_equal(loaded.prompt_pooled, before[0])
    assert torch.equal(loaded.mapper.net[0].weight, before[1])


NEAR_CAP = """
import json, resource, sys, time
from a2i_core.core.errors import A2IError
from a2i_core.mapper.model import AudioToSD3Mapper
start, base = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    AudioToSD3Mapper.from_pretrained(sys.argv[1])
    message = None
except A2IError as err:
    message = str(err)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024  # Linux: KiB
print(json.dumps({"message": message, "seconds": time.monotonic() - start, "grown": grown}))
"""


def test_a_config_near_the_cap_with_small_weights_fails_without_allocating(artifact):
    # Before: 8 s and 3.8 GB of resident memory to build the model, then the shape mismatch.
    config = json.loads((artifact / "config.json").read_text())
    config.update(hidden=[31000, 31000], dropout=[0.0, 0.0])  # 9.6e8 parameters: under the 1e9 cap
    (artifact / "config.json").write_text(json.dumps(config))
    MapperConfig.from_json(config, "config")  # accepted on its own
    result = subprocess.run([sys.executable, "-c", NEAR_CAP, str(artifact)], env=tool_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["message"] == (f"{artifact / 'model.safetensors'}: net.0.weight: shape (16, 8), but config.json "
                                 "makes it (31000, 8)")
    assert report["grown"] < 100 * 2**20 and report["seconds"] < 2, report


def test_generate_refuses_nan_weights_instead_of_rendering_black(artifact, tmp_path):
    # The CLI reads the mapper before the audio encoder and SD3: no models are needed to see the refusal.
    path = _edit(artifact / "model.safetensors", _set("net.0.weight", (0, 0), float("nan")))
    sf.write(tmp_path / "x.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 16000), 16000)
    result = subprocess.run([sys.executable, "-m", "a2i_core.cli", "generate", str(tmp_path / "x.wav"), "--out",
                             str(tmp_path / "out"), "--mapper", str(artifact), "--project", str(tmp_path)],
                            env=tool_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {path}: net.0.weight[0, 0] is nan: a mapper's values are all finite"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
