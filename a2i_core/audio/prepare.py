"""The audio_encoder stage's work: the frozen audio encoder that params name, put in ``models/audio_encoder``.

VGGish: ``audio_encoder.weights`` (and ``pca``) name a URL or a local file; the folder holds ``vggish.pth``
(+ ``pca.pth``) and a ``source.json`` with their sha256. A URL's file must have the full sha256 that params give,
or, where they give none, the one pinned in the pin file on its first download
(:func:`a2i_core.core.fetch_file.pin`). CLAP or AST: ``audio_encoder.checkpoint`` names a Hub id or a local folder,
pinned in ``source.json`` as SD3 is (:func:`a2i_core.core.hub.prepare_pretrained`). Either is loaded once before it
is put in place. The offline demo's tiny encoders are built by its own stage (:mod:`a2i_core.offline.audio_encoder`)
through :func:`install_vggish` and :func:`checker`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from a2i_core.audio.clap_ast import CONFIG_FILE
from a2i_core.audio.encoder import PCA_FILE, WEIGHTS_FILE, WeightsFileError, load_audio_encoder
from a2i_core.core.errors import A2IError
from a2i_core.core.fetch_file import fetch_file, keep_pin_file, pin
from a2i_core.core.files import atomic_dir
from a2i_core.core.hub import TINY, TINY_REFUSED, prepare_pretrained, write_source
from a2i_core.core.params import AudioEncoderParams
from a2i_core.core.urls import redact

# Puts one of VGGish's files ("weights" or "pca") at the path given; returns (its source as recorded, its sha256).
PutFile = Callable[[str, Path], tuple[str, str]]


def prepare_vggish(params: AudioEncoderParams, out_dir: str | Path, pins: Path | None = None) -> dict:
    """Fetch VGGish (and its PCA) into ``out_dir`` with a ``source.json``; a file that fails its sha256, its pin or
    the safe loader is refused in one line and never appears there. ``pins``: the pin file, where a URL without a
    sha256 in params is pinned on first use (without one, such a URL is refused)."""
    fetch = fetcher(params, pins)
    return install_vggish(out_dir, params.postprocess, fetch, fetch.pin_first_uses)


def fetcher(params: AudioEncoderParams, pins: Path | None = None) -> Fetcher:
    """Brings VGGish's files in from where params name them: a :data:`PutFile`."""
    return Fetcher(params, pins)


class Fetcher:
    """Brings VGGish's files in from where params name them (a URL, checked against its sha256 or its pin, or a local
    file); :meth:`pin_first_uses` then pins the URLs that had neither, once their files have loaded."""

    def __init__(self, params: AudioEncoderParams, pins: Path | None = None) -> None:
        self.files = {"weights": (params.weights, params.weights_sha256), "pca": (params.pca, params.pca_sha256)}
        self.pins = pins
        self.first_uses: list[tuple[str, str, str]] = []  # (location, sha256, params key) to pin

    def __call__(self, role: str, dest: Path) -> tuple[str, str]:
        location, sha256 = self.files[role]
        if location == TINY:
            raise A2IError(f"audio_encoder.{role}: {TINY_REFUSED}")
        key = f"audio_encoder.{role}_sha256"
        digest = fetch_file(location, dest, sha256, self.pins, key)
        if sha256 is None and self.pins is not None:
            self.first_uses.append((location, digest, key))
        # source.json is a DVC output (pushed to the team's remote): never a password or a signed query.
        return redact(location), digest

    def pin_first_uses(self) -> None:
        for location, digest, key in self.first_uses:
            pin(self.pins, location, digest, key)  # a local file, or a URL pinned already, is left as it is


def install_vggish(out_dir: str | Path, postprocess: bool, put: PutFile,
                   loaded: Callable[[], None] | None = None) -> dict:
    """VGGish's files (the PCA too with ``postprocess``) as ``put`` makes them, loaded once, then in ``out_dir``.
    ``loaded`` runs once they have loaded, before the folder is put in place: a digest it pins is a good file's, and
    a folder is never in place with its first-use pins unrecorded."""
    out_dir = Path(out_dir)
    names = {"weights": WEIGHTS_FILE, **({"pca": PCA_FILE} if postprocess else {})}
    record: dict[str, dict] = {}
    with atomic_dir(out_dir) as tmp:  # out_dir is replaced only once every file has loaded
        for role, name in names.items():
            source, digest = put(role, tmp / name)
            record[role] = {"file": name, "source": source, "sha256": digest}
        # Load once now, so a wrong file fails here rather than in a later stage.
        try:
            load_audio_encoder(tmp, postprocess, shown_as=out_dir)
        except WeightsFileError as err:
            raise A2IError(f"{err}: removed") from None
        write_source(tmp, record)
        if loaded is not None:
            loaded()
    return record


def prepare_audio_encoder(params: AudioEncoderParams, out_dir: str | Path, pins: Path | None = None) -> dict:
    """VGGish (``prepare_vggish``), or CLAP or AST pinned like SD3; loaded once before it is put in place, so that a
    folder of another model or a broken one fails here, in one line. ``pins``, the pin file, exists afterwards (the
    stage declares it as an output) even where nothing was pinned."""
    if pins is not None:
        keep_pin_file(pins)
    if params.model == "vggish":
        return prepare_vggish(params, out_dir, pins)
    return prepare_pretrained(str(params.checkpoint), out_dir, CONFIG_FILE, checker(params))


def checker(params: AudioEncoderParams) -> Callable[[Path], None]:
    """The check a CLAP or AST folder passes before it becomes the audio encoder: it loads, as the model params name."""

    def check(tmp: Path) -> None:
        kind = load_audio_encoder(tmp, postprocess=False, shown_as=params.checkpoint).kind
        if kind != params.model:
            raise A2IError(f"audio_encoder.checkpoint {params.checkpoint}: holds a {kind} model, but "
                           f"audio_encoder.model is {params.model}")

    return check
