"""Where a pretrained model (SD3, CLIP) comes from: a saved directory, or a Hub id pinned to a revision.

The encoders stage writes ``source.json`` into ``models/sd3`` and ``models/clip``; everything downstream asks
this module what ``from_pretrained`` should load and what the model is called in a mapper's provenance.
"""

from __future__ import annotations

import json
from pathlib import Path

from a2i_core.errors import A2IError, first_line
from a2i_core.files import read_json, write_text
from a2i_core.urls import redact, redact_text

SOURCE_FILE = "source.json"
TINY = "tiny"
SD3_MARKER = "model_index.json"


def write_source(out_dir: Path, record: dict) -> None:
    write_text(out_dir / SOURCE_FILE, json.dumps(record, indent=2) + "\n")


def _record(directory: Path) -> dict:
    source = directory / SOURCE_FILE
    if not source.is_file():
        raise A2IError(f"{directory}: no saved model or source.json (run the encoders stage: dvc repro encoders)")
    record = read_json(source)
    if not (isinstance(record, dict) and isinstance(record.get("model"), str)
            and isinstance(record.get("revision"), str | None)):
        raise A2IError(f"{source}: expected model (a string) and revision (a string or null); rerun the encoders "
                       "stage")
    return record


def pretrained_source(directory: str | Path, marker: str = SD3_MARKER) -> tuple[str, str | None]:
    """What ``from_pretrained`` should load: (local dir or Hub id, revision)."""
    directory = Path(directory)
    if (directory / marker).is_file():
        return str(directory), None
    record = _record(directory)
    return record["model"], record.get("revision")


def sd3_source(directory: str | Path) -> tuple[str, str | None]:
    return pretrained_source(directory, SD3_MARKER)


def model_identity(directory: str | Path, marker: str = SD3_MARKER) -> str:
    """The model's name in a provenance record, the same wherever its directory lives: "tiny", "id@revision", or
    the local directory it was pinned to (or that is itself a saved model)."""
    directory = Path(directory)
    if (directory / marker).is_file() and not (directory / SOURCE_FILE).is_file():
        return str(directory.resolve())
    record = _record(directory)
    return record["model"] if not record.get("revision") else f"{record['model']}@{record['revision']}"


def hub_revision(model_id: str) -> str:
    from huggingface_hub import HfApi, auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    shown = redact(model_id)  # an id is no URL, but a URL given in its place must not print its secrets
    try:
        auth_check(model_id)  # fails now, with a clear message, rather than deep inside a later stage
        return HfApi().model_info(model_id).sha
    except GatedRepoError:
        raise A2IError(f"{shown} is gated: accept its licence on the Hub, then run `hf auth login`") from None
    except RepositoryNotFoundError:
        raise A2IError(f"{shown}: no such model on the Hub (or it is private and you are not logged in)") from None
    except Exception as err:  # connection errors come in many types
        reason = redact_text(first_line(err))
        raise A2IError(f"cannot reach the Hub to resolve {shown}: {reason}") from None
