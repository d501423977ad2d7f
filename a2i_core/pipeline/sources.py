"""sources: a fingerprint of the local files each reader of params' paths reads (see :mod:`a2i_core.data.fingerprint`).

``data.json`` for ingest (the data source's folder, archive copy or CSVs), ``release.json`` for embed_audio
(``audio_encoder.release``) and ``eval_set_NAME.json`` for each evaluation set; each file is rewritten on every
run, byte for byte the same unless a file changed.
"""

from __future__ import annotations

from pathlib import Path

from a2i_core.core.params import Params
from a2i_core.data.fingerprint import Digests, local_paths, write_fingerprint


def reader_paths(params: Params) -> dict[str, list[str]]:
    """The local paths each reading stage reads, by fingerprint file name."""
    release = params.audio_encoder.release
    return {
        "data.json": local_paths(getattr(params.data, params.data.source)),
        "release.json": local_paths(release) if release is not None else [],
        **{f"eval_set_{name}.json": local_paths(getattr(s, s.source)) for name, s in params.eval_sets.items()},
    }


def sources(params: Params, out: Path) -> None:
    digests = Digests()
    try:
        for name, paths in reader_paths(params).items():
            write_fingerprint(out / name, paths, digests)
    finally:
        digests.save()
    for stale in set(out.glob("eval_set_*.json")) - {out / n for n in reader_paths(params)}:
        stale.unlink()  # a set no longer in params
