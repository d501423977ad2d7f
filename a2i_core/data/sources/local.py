"""Sources of local audio files: ESC-50 (its official layout) and any folder of recordings.

File names in their CSVs are data, not paths: a row naming a file outside its root (``../../etc/passwd``, an absolute
path, a symlink that leads out) is reported and skipped, as is a row that cannot be read, and the rest go on.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path, PurePosixPath

import pandas as pd

from a2i_core.core.audio_io import AUDIO_SUFFIXES
from a2i_core.core.errors import A2IError, first_line
from a2i_core.core.fetch_file import local_copy
from a2i_core.core.names import safe_id
from a2i_core.core.params import ArchiveParams
from a2i_core.core.skipped import Skipped
from a2i_core.core.urls import redact
from a2i_core.data.fingerprint import Digests
from a2i_core.data.sources.archive import extracted

log = logging.getLogger(__name__)
ESC50_COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


def listed_path(root: Path, name: str) -> Path | None:
    """``root / name`` for a file name read from a CSV, if the name stays under ``root`` by its parts (no '..', no
    backslash, absolute only within ``root``); else None. Symlinks are followed afterwards: a folder of links
    (DVC's symlink cache, a link farm) is the user's own data, and what comes from outside is the name."""
    parts = PurePosixPath(name).parts
    if not name or "\\" in name or "\0" in name or ".." in parts:
        return None
    if name.startswith("/"):  # an absolute name is fine when it names a place under the root
        return Path(name) if Path(name).is_relative_to(root.absolute()) else None
    return root / name


def resolved_file(path: Path) -> Path | None:
    """The regular file ``path`` leads to, links followed; None for a missing file or a link loop."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):
        return None
    return real if real.is_file() else None


def esc50_root(location: str, archives: ArchiveParams) -> Path:
    """A directory holding meta/esc50.csv: the given one, or the official archive downloaded and extracted."""
    path = local_copy(location)
    if path.is_file() and path.suffix == ".zip":
        path = extracted(path, archives, shown_as=redact(location))
    found = next(iter(sorted(path.glob("**/meta/esc50.csv"))), None)
    if found is None:
        raise A2IError(f"{redact(location)}: no meta/esc50.csv inside (an ESC-50 copy or its archive was expected)")
    return found.parent.parent


def esc50_rows(location: str, archives: ArchiveParams) -> tuple[pd.DataFrame, dict[str, int]]:
    """ESC-50's clips (labels as the CSV has them: ingest checks those) and the rows skipped, by reason."""
    root = esc50_root(location, archives)
    csv_path = root / "meta" / "esc50.csv"
    # Only the columns that become paths or numbers are read as text; src_file keeps pandas' reading, so the
    # groups (and so the splits) of existing workspaces stay as they were.
    meta = read_csv(csv_path, dtype={"filename": str, "fold": str, "target": str, "category": str})
    if list(meta.columns) != ESC50_COLUMNS:
        raise A2IError(f"{csv_path}: columns {list(meta.columns)}, expected {ESC50_COLUMNS}")
    audio = (root / "audio").resolve()
    skipped = Skipped(str(csv_path))
    keep, uris = [], []
    for i, row in enumerate(meta.itertuples(index=False)):
        reason, value = _esc50_problem(row, audio)
        if reason:
            skipped.add(reason, value)
        else:
            keep.append(i)
            uris.append(str(value))
    meta = meta.iloc[keep]
    frame = pd.DataFrame({
        "clip_id": [safe_id(f) for f in meta["filename"]],
        # Takes of one source recording share a group, so no recording is in two splits.
        "group": meta["src_file"].astype(str).tolist(),
        "label": meta["category"].astype(str).tolist(),
        "name": meta["category"].astype(str).str.replace("_", " ").tolist(),
        "uri": uris,
        "fold": [int(f) for f in meta["fold"]],  # the official 5 folds, kept for cross-validated evaluation
        "sha256": contents(uris),
    })
    return frame, skipped.done()


def _esc50_problem(row: tuple, audio: Path) -> tuple[str | None, object]:
    """Why an ESC-50 row cannot be used (a reason key) and the value at fault; or None and the clip's path."""
    for column in ("fold", "target"):
        if not _is_int(getattr(row, column)):
            return f"bad_{column}", getattr(row, column)
    name = row.filename
    # A plain file name, nothing that walks: ESC-50 keeps every clip directly in audio/.
    if not isinstance(name, str) or name in (".", "..") or "/" in name or listed_path(audio, name) is None:
        return "path_outside_root", name
    return None, audio / name  # a missing or unreadable file is the download stage's to report, as for any clip


def _is_int(value: object) -> bool:
    if not isinstance(value, str):  # an empty cell reads as NaN
        return False
    try:
        int(value)
    except ValueError:
        return False
    return True


def folder_rows(root: str, labels_csv: str | None) -> tuple[pd.DataFrame, dict[str, int]]:
    """A folder's clips, labelled by a file,label CSV or by sub-folder names; and the rows skipped, by reason."""
    base = Path(root)
    if not base.is_dir():
        raise A2IError(f"{root}: not a directory")
    skipped = Skipped(labels_csv or root)
    labelled = _csv_labelled(base, labels_csv, skipped) if labels_csv else _folder_labelled(base, skipped)
    # (path as listed, file it leads to, label): ids come from the listed path, as they always have.
    rows = [(p, real, label) for p, label in labelled if (real := _existing(p, skipped))]
    if not rows:
        raise A2IError(f"{root}: no labelled audio files found")
    relative = [str(p.relative_to(base)) if p.is_relative_to(base) else str(p) for p, _, _ in rows]
    frame = pd.DataFrame({
        "clip_id": [safe_id(r) for r in relative],
        "group": [safe_id(r) for r in relative],
        "label": [label for _, _, label in rows],
        "name": [label.replace("_", " ") for _, _, label in rows],
        "uri": [str(real) for _, real, _ in rows],
        "sha256": contents([str(real) for _, real, _ in rows]),
    })
    return frame, skipped.done()


def contents(files: list[str]) -> list[str]:
    """Each file's sha256 ("" for one that cannot be read: the download stage reports it): a replaced recording
    changes the candidates, so the download stage takes it again (its name and clip id stay the same)."""
    digests = Digests()
    found = []
    for file in files:
        try:
            found.append(digests.of(file))
        except OSError:
            found.append("")
    digests.save()
    return found


def _existing(path: Path, skipped: Skipped) -> Path | None:
    real = resolved_file(path)
    if real is None:
        skipped.add("missing_file", path)
    return real


def _csv_labelled(base: Path, labels_csv: str, skipped: Skipped) -> list[tuple[Path, str]]:
    try:
        with open(labels_csv, newline="") as f:
            reader = csv.DictReader(f)
            if not {"file", "label"} <= set(reader.fieldnames or []):
                raise A2IError(f"{labels_csv}: columns {reader.fieldnames}, expected file,label")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise A2IError(f"{labels_csv}: cannot read the labels CSV ({err})") from None
    labelled = []
    for row in rows:
        file, label = row["file"], row["label"]
        if not file or label is None:  # a short row: DictReader fills the missing fields with None
            skipped.add("missing_field", row)
        elif (path := listed_path(base, file)) is None:
            skipped.add("path_outside_root", file)
        else:
            labelled.append((path, label))
    return labelled


def _folder_labelled(base: Path, skipped: Skipped) -> list[tuple[Path, str]]:
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    loose = [p for p in files if p.parent == base]
    if loose:
        log.warning("%d files directly in %s have no <label>/ folder: skipped", len(loose), base)
        skipped.counts["no_label_folder"] += len(loose)
    return [(p, p.parent.name) for p in files if p.parent != base]


def read_csv(path: Path, **kwargs: object) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as err:
        raise A2IError(f"{path}: cannot read ({first_line(err)})") from None
