"""What a rerun of the download stage finds and keeps: clips already on disk or staged for a pack are adopted into the
manifest, leftovers of an interrupted run (temporary files, packs no manifest row names) are removed, and only the
clips still missing are fetched again."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import soundfile as sf

from a2i_core.core.errors import describe
from a2i_core.core.manifest import save_manifest
from a2i_core.core.packs import PACK_DIR, PackWriter, pack_clip_ids
from a2i_core.data.fetch_clip import RETRYABLE

log = logging.getLogger(__name__)
STAGING = ".staging"  # with packs: finished clips' WAVs until their pack is written


def to_fetch(audio_dir: Path, clip_ids: pd.Index, rows: dict[str, dict], packer: PackWriter | None,
             contents: dict[str, str]) -> list[str]:
    """The clips not done and not failed for good, in id order; a clip whose local file's digest (``contents``)
    is not the one it was decoded from is not done."""
    changed = {cid for cid, r in rows.items() if contents.get(cid, "") != (r.get("source_sha256") or "")}
    if changed:
        log.info("%d local files changed since they were taken: taken again", len(changed))
    done = {cid for cid, r in rows.items()
            if r["status"] == "ok" and (audio_dir / r["path"]).is_file() and cid not in changed}
    # Adopted, in the next pack (already gathered: taking it again would pack it twice).
    done |= packer.pending_ids() if packer else set()
    final = {cid for cid, r in rows.items() if r["status"] not in RETRYABLE | {"ok"} and cid not in changed}
    todo = [cid for cid in clip_ids if cid not in done and cid not in final]
    log.info("%d clips: %d already done and %d failed for good (skipped), %d to fetch", len(clip_ids), len(done),
             len(final), len(todo))
    return todo


def remove_leftovers(audio_dir: Path) -> None:
    """A killed run's partial files (never whole clips: those are renamed into place complete)."""
    for folder in (audio_dir, audio_dir / STAGING):
        for leftover in [*folder.glob(".*.tmp"), *folder.glob(".dl-*")]:
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()


def remove_unrecorded_packs(audio_dir: Path, rows: dict[str, dict]) -> None:
    """Packs written just before a stopped run could record them: no manifest row points to them, and every clip
    in them is still staged, to be packed again. Any other pack holds the only copy of its clips: it stays."""
    recorded = {r["path"] for r in rows.values() if r["status"] == "ok"}
    staged = {p.stem for p in (audio_dir / STAGING).glob("*.wav")}
    for pack in sorted((audio_dir / PACK_DIR).glob("pack-*.parquet")):
        if f"{PACK_DIR}/{pack.name}" not in recorded and set(pack_clip_ids(pack)) <= staged:
            log.info("%s: never recorded, its clips are packed again", pack.name)
            pack.unlink()


def adopt_staged(audio_dir: Path, clip_ids: pd.Index, rows: dict[str, dict], packer: PackWriter | None) -> None:
    """Finished clips a stopped run left in ``.staging`` (written whole, not yet packed): packed, not fetched again.

    Without packs now, they move beside the other clips' files.
    """
    staging = audio_dir / STAGING
    for wav in sorted(staging.glob("*.wav")):
        if wav.stem not in clip_ids or rows.get(wav.stem, {}).get("status") == "ok":  # stale, or packed already
            wav.unlink()
        elif packer:
            packer.add(clip_row(wav), wav)
        else:
            os.replace(wav, audio_dir / wav.name)
    if not packer:
        shutil.rmtree(staging, ignore_errors=True)


def adopt_files(audio_dir: Path, clip_ids: pd.Index, rows: dict[str, dict]) -> None:
    """Clip files written before a stopped run could record them are ok; files of clips no longer wanted go."""
    for wav in sorted(audio_dir.glob("*.wav")):
        if wav.stem not in clip_ids:
            log.info("%s: no longer a candidate, removed", wav.name)
            wav.unlink()
        elif rows.get(wav.stem, {}).get("status") != "ok":
            rows[wav.stem] = clip_row(wav)


def clip_row(wav: Path) -> dict:
    return {"clip_id": wav.stem, "status": "ok", "reason": "", "path": wav.name,
            "seconds": float(sf.info(wav).duration)}


def keep_finished(audio_dir: Path, rows: dict[str, dict], packer: PackWriter | None) -> list[tuple[str, str]]:
    """Pack what the packer holds and save the manifest; what failed and why (for a one-line error), not raised."""
    problems = []
    if packer:
        try:
            packer.flush()
        except Exception as err:  # its clips stay in .staging, for the rerun
            problems.append(("writing a pack", describe(err)))
    try:
        save_manifest(audio_dir, rows)
    except Exception as err:
        problems.append(("saving the manifest", describe(err)))
    return problems
