"""Where a pretrained model (SD3, CLIP) comes from: a saved directory, or a Hub id pinned to a revision.

The encoders stage writes ``source.json`` into ``models/sd3`` and ``models/clip``; everything downstream asks
this module what ``from_pretrained`` should load and what the model is called in a mapper's provenance.
A trained mapper, too, may be named by a Hub id (``owner/name@revision``): :func:`local_folder` finds its files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from a2i_core.core.errors import A2IError, first_line
from a2i_core.core.files import atomic_dir, read_json, write_text
from a2i_core.core.urls import redact, redact_text

SOURCE_FILE = "source.json"
TINY = "tiny"  # a model built in code by the offline demo's stages; its folder holds the model itself
TINY_REFUSED = ("tiny models are the offline demo's, built by its own stages (`a2i demo`, profiles/offline.yaml); "
                "name a Hub id or a saved model folder")
SD3_MARKER = "model_index.json"
# A Hub model id with its owner, and optionally a revision (branch, tag or commit; "refs/pr/1" has slashes). The
# revision becomes a path inside the Hugging Face cache (refs/<revision>), so no "..", no leading or doubled "/".
_HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>\w[\w.-]*(?:/[\w.-]+)*))?",
                     re.ASCII)


def write_source(out_dir: Path, record: dict) -> None:
    write_text(out_dir / SOURCE_FILE, json.dumps(record, indent=2) + "\n")


def install_model(out_dir: str | Path, record: dict, build: Callable[[Path], None] | None = None,
                  check: Callable[[Path], None] | None = None) -> dict:
    """``out_dir`` whole or not at all: what ``build`` writes (a model built in code; nothing for a pinned one), its
    ``source.json`` holding ``record``, and ``check`` (when given) run on the folder before it is put in place."""
    with atomic_dir(out_dir) as tmp:  # a reader never finds it half-built
        if build is not None:
            build(tmp)
        write_source(tmp, record)
        if check is not None:
            check(tmp)
    return record


def prepare_pretrained(model: str, out_dir: str | Path, marker: str,
                       check: Callable[[Path], None] | None = None) -> dict:
    """Pin a Hub id to the revision it names now, or a local model directory, in ``out_dir/source.json``;
    ``check`` (when given) sees the folder before it is put in place.

    ``marker`` is the file that makes a directory a saved model of this kind (model_index.json, config.json).
    """
    if model == TINY:
        raise A2IError(f"{model}: {TINY_REFUSED}")
    if Path(model).is_dir():
        if not (Path(model) / marker).is_file():
            raise A2IError(f"{model}: not a saved model directory (no {marker})")
        record = {"model": str(Path(model).resolve()), "revision": None}
    else:  # a path that is not there is never looked up on the Hub, where someone else may own that name
        local = local_reason(model)
        if local is not None:
            raise A2IError(f"{redact(model)}: no such model folder{local}")
        parsed = parse_hub_id(model)
        if parsed is None:
            raise A2IError(f"{redact(model)}: no such model folder, and not a Hub id (owner/name or "
                           "owner/name@revision)")
        repo, revision = parsed
        record = {"model": repo, "revision": hub_revision(repo, revision)}
    return install_model(out_dir, record, check=check)


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


def hub_revision(model_id: str, revision: str | None = None) -> str:
    """The commit that ``revision`` (a branch, tag or commit; default main) of a Hub model names now."""
    from huggingface_hub import HfApi, auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    shown = redact(model_id)  # an id is no URL, but a URL given in its place must not print its secrets
    try:
        auth_check(model_id)  # fails now, with a clear message, rather than deep inside a later stage
        return HfApi().model_info(model_id, revision=revision).sha
    except GatedRepoError:
        raise A2IError(f"{shown} is gated: accept its licence on the Hub, then run `hf auth login`") from None
    except RepositoryNotFoundError:
        raise A2IError(f"{shown}: no such model on the Hub (or it is private and you are not logged in)") from None
    except Exception as err:  # connection errors come in many types
        reason = redact_text(first_line(err))
        raise A2IError(f"cannot reach the Hub to resolve {shown}: {reason}") from None


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when ``text`` is a well-formed Hub model id ``owner/name[@revision]``, else None."""
    match = _HUB_ID.fullmatch(text)
    if match is None or ".." in text:
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(match["repo"])  # the Hub's own rules: length, no "--", no ".git" ending
    except HFValidationError:
        return None
    return match["repo"], match["revision"]


def local_folder(location: str | Path, files: list[str] | None = None, what: str = "model") -> Path:
    """The folder ``location`` names: an existing directory as it is (a local folder always wins), else a Hub model
    id ``owner/name[@revision]``, its ``files`` (default: all) fetched into the Hugging Face cache or found there.

    Text that looks like a path is never taken for a Hub id, so a folder that is missing for now (a fresh clone before
    ``dvc pull``, a ``dvc checkout`` halfway) is never replaced by whoever owns that name on the Hub: an absolute path,
    one starting with ``.``, ``..`` or ``~``, and ``a/b`` where ``a`` is a folder here (``./models/mapper`` reaches
    this as ``models/mapper``: the command line makes it a Path)."""
    text = Path(location).as_posix() if isinstance(location, Path) else str(location)
    path = _expand(Path(location))
    if path.is_dir():
        return path
    shown = redact(text)  # a URL given in place of a folder must not print its secrets
    if path.exists():
        raise A2IError(f"{shown}: not a directory (a {what} is a folder, or a Hub id owner/name[@revision])")
    local = local_reason(text)
    if local is not None:
        raise A2IError(f"{shown}: no such {what} folder{local}{_dvc_hint(path)}")
    parsed = parse_hub_id(text)
    if parsed is None:
        raise A2IError(f"{shown}: no such {what} folder, and not a Hub id (owner/name or owner/name@revision)")
    return hub_snapshot(*parsed, files=files, what=what)


def _expand(path: Path) -> Path:
    try:
        return path.expanduser()
    except RuntimeError:  # ~user of no such user, or no home: the path as it is (then no such folder)
        return path


def local_reason(text: str) -> str | None:
    """Why ``text`` is a local path and no Hub id ("" when that is plain to see), or None when it may be an id."""
    if text.startswith((".", "~", "/", "\\")) or Path(text).is_absolute():
        return ""
    first = re.split(r"[/\\]", text, maxsplit=1)[0]
    if first != text and Path(first).is_dir():
        return f" ({first}/ is a folder here, so this is a path, not a Hub id)"
    return None


def _dvc_hint(path: Path) -> str:
    """A hint to fetch or make the folder when ``path`` lies in a DVC project (a folder with dvc.yaml or .dvc/)."""
    try:
        here = path.absolute()
        for folder in here.parents:
            if (folder / "dvc.yaml").is_file() or (folder / ".dvc").is_dir():
                return "; if it is this DVC project's output, `dvc pull` fetches it (or `dvc repro` makes it)"
    except OSError:
        pass
    return ""


def hub_snapshot(repo_id: str, revision: str | None = None, files: list[str] | None = None,
                 what: str = "model") -> Path:
    """The cached snapshot of a Hub model repo at ``revision`` (default: main), downloaded when missing; with
    HF_HUB_OFFLINE=1 or no network, the copy already in the cache (HF_HUB_CACHE)."""
    from huggingface_hub import snapshot_download

    shown = redact(repo_id if revision is None else f"{repo_id}@{revision}")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=files))
    except Exception as err:  # the Hub's errors, and connection errors of many types
        raise _snapshot_error(err, shown, revision, what) from None


def _snapshot_error(err: Exception, shown: str, revision: str | None, what: str) -> A2IError:
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError):
        return A2IError(f"{shown} is gated: accept its licence on the Hub, then run `hf auth login`")
    if isinstance(err, RepositoryNotFoundError):
        return A2IError(f"{shown}: no such {what} folder here, nor model on the Hub (or it is private and you are "
                        "not logged in: `hf auth login`)")
    if isinstance(err, RevisionNotFoundError):
        return A2IError(f"{shown}: the Hub has no revision {revision!r} of it")
    if isinstance(err, IncompleteSnapshotError):
        return A2IError(f"{shown}: its copy in the Hugging Face cache is incomplete and the Hub cannot be reached: "
                        "download it again online")
    if isinstance(err, LocalEntryNotFoundError):
        if constants.is_offline_mode() or isinstance(err.__cause__, OfflineModeIsEnabled):
            return A2IError(f"{shown}: no such {what} folder here, nor in the Hugging Face cache, and HF_HUB_OFFLINE "
                            "is set (unset it to download from the Hub)")
        return A2IError(f"{shown}: no such {what} folder here, nor in the Hugging Face cache, and the Hub cannot be "
                        "reached")
    return A2IError(f"cannot download {shown} from the Hub: {redact_text(first_line(err))}")
