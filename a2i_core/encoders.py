"""The frozen encoders named in params, materialised under ``models/``.

``audio_encoder.weights`` and ``diffusion.model`` each name either ``tiny`` (built in code for the offline
profile), a URL or local file (VGGish), or a Hub id or local directory (SD3). The encoders stage writes:

- ``models/vggish/``: ``vggish.pth`` (+ ``pca.pth``) and ``source.json`` with their sha256;
- ``models/sd3/``: the tiny pipeline itself, or ``source.json`` pinning a Hub id to the revision resolved now,
  so that dvc.lock records exactly which SD3 snapshot the features and images came from.

Downstream stages load only through :func:`load_audio_encoder` and :func:`sd3_source`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from a2i_core import tiny
from a2i_core.errors import A2IError
from a2i_core.files import atomic_path, fetch_file, sha256_file, write_text
from a2i_core.params import AudioEncoderParams
from a2i_core.vggish import Postprocessor, VGGish, load_postprocessor, load_vggish

SOURCE_FILE = "source.json"
TINY = "tiny"


def prepare_vggish(params: AudioEncoderParams, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"weights": ("vggish.pth", params.weights, params.weights_sha256)}
    if params.postprocess:
        files["pca"] = ("pca.pth", params.pca, params.pca_sha256)
    record: dict[str, dict] = {}
    for role, (name, location, sha256) in files.items():
        dest = out_dir / name
        if location == TINY:
            built = tiny.tiny_vggish_weights() if role == "weights" else tiny.tiny_vggish_pca()
            with atomic_path(dest) as tmp:
                torch.save(built, tmp)
            digest = sha256_file(dest)
        else:
            digest = fetch_file(location, dest, sha256)
        record[role] = {"file": name, "source": location, "sha256": digest}
    # Load once now, so a wrong file fails here rather than in a later stage.
    load_audio_encoder(out_dir, params.postprocess)
    write_text(out_dir / SOURCE_FILE, json.dumps(record, indent=2) + "\n")
    return record


@dataclass
class AudioEncoder:
    model: VGGish
    postprocessor: Postprocessor | None
    weights_sha256: str


def load_audio_encoder(directory: str | Path, postprocess: bool) -> AudioEncoder:
    directory = Path(directory)
    weights_path = directory / "vggish.pth"
    if not weights_path.is_file():
        raise A2IError(f"{weights_path}: not found (run the encoders stage: dvc repro encoders)")
    try:
        model = load_vggish(torch.load(weights_path, map_location="cpu", weights_only=True))
        post = None
        if postprocess:
            pca_path = directory / "pca.pth"
            if not pca_path.is_file():
                raise A2IError(f"{pca_path}: not found, but postprocess is on (rerun the encoders stage)")
            post = load_postprocessor(torch.load(pca_path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError) as err:  # unpickling errors of a corrupt file
        raise A2IError(f"{directory}: cannot read VGGish weights: {str(err).splitlines()[0]}") from None
    return AudioEncoder(model, post, sha256_file(weights_path))


def prepare_pretrained(model: str, out_dir: str | Path, marker: str, build_tiny) -> dict:
    """Build the tiny model into ``out_dir``, or pin a Hub id / local directory in ``source.json``.

    ``marker`` is the file that makes a directory a saved model of this kind (model_index.json, config.json).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    if model == TINY:
        build_tiny(out_dir)
        return {"model": TINY}
    if Path(model).is_dir():
        if not (Path(model) / marker).is_file():
            raise A2IError(f"{model}: not a saved model directory (no {marker})")
        record = {"model": str(Path(model).resolve()), "revision": None}
    else:
        record = {"model": model, "revision": _hub_revision(model)}
    out_dir.mkdir(parents=True)
    write_text(out_dir / SOURCE_FILE, json.dumps(record, indent=2) + "\n")
    return record


def prepare_sd3(model: str, out_dir: str | Path) -> dict:
    return prepare_pretrained(model, out_dir, "model_index.json", tiny.save_tiny_sd3)


def prepare_clip(model: str, out_dir: str | Path) -> dict:
    return prepare_pretrained(model, out_dir, "config.json", tiny.save_tiny_clip)


def _hub_revision(model_id: str) -> str:
    from huggingface_hub import HfApi, auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        auth_check(model_id)  # fails now, with a clear message, rather than deep inside a later stage
        return HfApi().model_info(model_id).sha
    except GatedRepoError:
        raise A2IError(f"{model_id} is gated: accept its licence on the Hub, then run `hf auth login`") from None
    except RepositoryNotFoundError:
        raise A2IError(f"{model_id}: no such model on the Hub (or it is private and you are not logged in)") from None
    except Exception as err:  # connection errors come in many types
        raise A2IError(f"cannot reach the Hub to resolve {model_id}: {str(err).splitlines()[0]}") from None


def pretrained_source(directory: str | Path, marker: str = "model_index.json") -> tuple[str, str | None]:
    """What ``from_pretrained`` should load: (local dir or Hub id, revision)."""
    directory = Path(directory)
    if (directory / marker).is_file():
        return str(directory), None
    source = directory / SOURCE_FILE
    if not source.is_file():
        raise A2IError(f"{directory}: no saved model or source.json (run the encoders stage: dvc repro encoders)")
    record = json.loads(source.read_text())
    return record["model"], record.get("revision")


def sd3_source(directory: str | Path) -> tuple[str, str | None]:
    return pretrained_source(directory, "model_index.json")
