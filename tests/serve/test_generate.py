"""`a2i generate` on a folder of mixed audio files with the demo's mapper, and its clear failures."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import save_file

from a2i_core.core.audio_io import ffmpeg_binary
from a2i_core.core.errors import A2IError
from a2i_core.core.params import load_params
from a2i_core.data.sources.synthetic import clip_specs, synthesize
from a2i_core.diffusion.prompt_embeddings import load_sequences
from a2i_core.mapper.artifact import PROMPT_SEQUENCES_NAME, MapperArtifact
from a2i_core.offline.workspace import tool_env
from a2i_core.serve.generate import SoundToImage, image_seeds, output_names
from tests.core.test_audio_io import fifo_never_waited_on, huge_wav

pytestmark = pytest.mark.e2e
FORMATS = [("dog", "mp3", 44100, 2), ("bell", "ogg", 22050, 1), ("siren", "flac", 48000, 2), ("clock", "wav", 8000, 1)]


def _generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "a2i_core.cli", "generate", *args], env=tool_env(),
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    specs = clip_specs([label for label, *_ in FORMATS], 1, 2.0, 4.0, seed=11)
    for (label, ext, rate, channels), spec in zip(FORMATS, specs.values(), strict=True):
        src = folder / f"{label}.src.wav"
        sf.write(src, synthesize(spec), 16000)
        subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", "-i", str(src), "-ar", str(rate), "-ac",
                        str(channels), str(folder / f"{label}.{ext}")], check=True)
        src.unlink()
    return folder


def test_a_folder_of_mixed_files_becomes_images(demo_workspace, mixed_folder, tmp_path):
    files = sorted(str(p) for p in mixed_folder.iterdir())
    result = _generate(*files, "--out", str(tmp_path / "out"), "--project", str(demo_workspace[0]),
                       "--images-per-sound", "2", "--steps", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    images = sorted((tmp_path / "out").iterdir())
    assert len(images) == 8
    for path in images:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (128, 128)
    # Each sound's nearest prompt is printed; random encoders still tell these sounds apart.
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines() if ":" in line}
    for label, ext, *_ in FORMATS:
        assert lines[f"{label}.{ext}"].count("'an image of") == 3


def test_clear_errors(demo_workspace, tmp_path):
    project = str(demo_workspace[0])
    missing = _generate(str(tmp_path / "nope.wav"), "--out", str(tmp_path), "--project", project)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope.wav'}: no such file or directory"
    (tmp_path / "broken.mp3").write_bytes(b"ID3 not really")
    sf.write(tmp_path / "silence.wav", np.zeros(16000), 16000)
    bad = _generate(str(tmp_path / "broken.mp3"), str(tmp_path / "silence.wav"), "--out", str(tmp_path / "o"),
                    "--project", project, "--device", "cpu")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "broken.mp3: cannot decode audio" in bad.stderr and "silence.wav: silent" in bad.stderr
    assert not (tmp_path / "o").exists()  # nothing half-written
    no_mapper = _generate(str(tmp_path / "silence.wav"), "--out", str(tmp_path), "--project", str(tmp_path))
    assert no_mapper.returncode == 1 and "no trained mapper" in no_mapper.stderr and "--project" in no_mapper.stderr
    # Options meet params.yaml's own rules, finite numbers included. Before: --guidance inf rendered an all-black PNG
    # and exited 0; --guidance nan said "must be >= 0".
    for option, value, message in [("--size", "100", "--size: must be a multiple of 16"),
                                   ("--steps", "0", "--steps: must be in [1, 1,000], got 0"),
                                   ("--guidance", "inf", "--guidance: must be a finite number, got inf"),
                                   ("--guidance", "nan", "--guidance: must be a finite number, got nan"),
                                   ("--max-seconds", "inf", "--max-seconds: must be a finite number, got inf"),
                                   ("--max-seconds", "0", "--max-seconds: must be in (0, 86,400.0]"),
                                   ("--device", "gpu", "--device: unknown device 'gpu' (auto, cpu, cuda, cuda:N, mps)"),
                                   ("--dtype", "fp16", "--dtype: must be one of auto, float32, float16, bfloat16, "
                                                       "got 'fp16'")]:
        refused = _generate(str(tmp_path / "silence.wav"), "--out", str(tmp_path), "--project", project, option, value)
        assert refused.returncode == 1 and refused.stderr.strip() == f"error: {message}"


def test_a_batch_goes_on_past_a_bad_file_and_names_never_collide(demo_workspace, mixed_folder, tmp_path):
    # a/s.ogg and b/s.ogg share a name; a directory argument brings its files; a bad file and a one-sample file are
    # reported and skipped; a short file is padded as in training, and said.
    for sub, label in (("a", "dog.mp3"), ("b", "bell.ogg")):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy(mixed_folder / label, tmp_path / "in" / sub / "s.ogg")
    (tmp_path / "in" / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    sf.write(tmp_path / "in" / "one.wav", np.full(1, 0.5), 16000)
    short = synthesize(next(iter(clip_specs(["siren"], 1, 0.5, 0.5, seed=3).values())))
    sf.write(tmp_path / "in" / "short.wav", short, 16000)
    (tmp_path / "dir" / "x").mkdir(parents=True)
    shutil.copy(mixed_folder / "clock.wav", tmp_path / "dir" / "x" / "tick.wav")
    result = _generate(str(tmp_path / "in" / "a" / "s.ogg"), str(tmp_path / "in" / "bad.wav"),
                       str(tmp_path / "in" / "b" / "s.ogg"), str(tmp_path / "in" / "one.wav"),
                       str(tmp_path / "in" / "short.wav"), str(tmp_path / "dir"), "--out", str(tmp_path / "out"),
                       "--project", str(demo_workspace[0]), "--steps", "2", "--device", "cpu")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png")) == [
        "s-2.png", "s.png", "short.png", "x/tick.png"]
    assert "bad.wav: cannot decode audio" in result.stderr and "one.wav: 0.0001 s is too short" in result.stderr
    assert "short.wav: 0.50 s is shorter than one 0.975 s VGGish example" in result.stderr
    assert "2 of 6 inputs failed" in result.stderr and "4 images in" in result.stdout
    (tmp_path / "a-file").write_text("not a directory")
    blocked = _generate(str(tmp_path / "dir"), "--out", str(tmp_path / "a-file"), "--project", str(demo_workspace[0]),
                        "--steps", "1", "--device", "cpu")
    assert blocked.returncode == 1 and "Traceback" not in blocked.stderr
    assert "error: rendering" in blocked.stderr and "1 of 1 inputs failed" in blocked.stderr
    with Image.open(tmp_path / "out" / "s.png") as a, Image.open(tmp_path / "out" / "s-2.png") as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))  # two sounds, two pictures


def test_special_files_a_lying_header_and_hostile_names(demo_workspace, tmp_path):
    """Each special file is one line naming what it is, the others are still rendered, a 4 GB header stops at the cap
    with a note, and no name can forge a line (issue 25)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    os.mkfifo(inputs / "pipe.wav")
    (inputs / "loop.wav").symlink_to(inputs / "loop.wav")
    (inputs / "gone.wav").symlink_to(inputs / "nothing.wav")
    forged = inputs / "a\nerror: forged.wav"
    raw = inputs / os.fsdecode(b"b\x1b[31m\xff\xe2\x80\xae.wav")  # ESC, a byte that is not UTF-8, a bidi override
    clip = synthesize(next(iter(clip_specs(["dog"], 1, 1.5, 1.5, seed=5).values())))
    for path in (forged, raw):
        sf.write(inputs / "plain.wav", clip, 16000)
        (inputs / "plain.wav").rename(path)
    huge = huge_wav(inputs / "huge.wav", clip)
    start = time.monotonic()
    with fifo_never_waited_on(inputs / "pipe.wav"):
        result = _generate(*(str(inputs / n) for n in ("pipe.wav", "loop.wav", "gone.wav")), "/dev/zero", str(forged),
                           str(raw), str(huge), "--out", str(tmp_path / "out"), "--project", str(demo_workspace[0]),
                           "--steps", "1", "--device", "cpu", "--max-seconds", "1")
    seconds = time.monotonic() - start
    assert result.returncode == 1 and "Traceback" not in result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith(("error:", "note:"))]
    assert said == [
        f"error: {inputs}/pipe.wav: is a named pipe, not a file",
        f"error: {inputs}/loop.wav: is a symbolic link loop",
        f"error: {inputs}/gone.wav: is a symbolic link to {inputs}/nothing.wav, which does not exist",
        "error: /dev/zero: is a character device, not a file",
        f"note: {inputs}/a\\nerror: forged.wav: longer than 1 s: only its first 1 s were heard (the cap: "
        "--max-seconds, or generate.max_seconds in params.yaml)",
        f"note: {inputs}/b\\x1b[31m\\xff\\u202e.wav: longer than 1 s: only its first 1 s were heard (the cap: "
        "--max-seconds, or generate.max_seconds in params.yaml)",
        f"note: {inputs}/huge.wav: longer than 1 s: only its first 1 s were heard (the cap: --max-seconds, or "
        "generate.max_seconds in params.yaml)",
        "error: 4 of 7 inputs failed (see above)"]
    heard = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in heard[:3]] == ["a\\nerror", "b\\x1b[31m\\xff\\u202e.wav", "huge.wav"]
    assert all(line.isprintable() for line in heard + said)
    assert heard[3].startswith("3 images in")
    assert len(list((tmp_path / "out").iterdir())) == 3
    assert seconds < 120  # before: the 4 GB header alone ran for hours, with no line at all


def _project_with(models: Path, params: Path, folder: Path, **changes: dict) -> Path:
    """A project of ``models`` (linked) and a copy of ``params`` with ``changes`` (section -> keys) made to it."""
    from ruamel.yaml import YAML

    yaml = YAML()
    raw = yaml.load(params.read_text())
    for section, keys in changes.items():
        raw[section].update(keys)
    folder.mkdir()
    (folder / "models").symlink_to(models)
    with open(folder / "params.yaml", "w") as f:
        yaml.dump(raw, f)
    return folder


def test_a_mistake_outside_what_generate_reads_is_a_note_and_each_png_carries_its_settings(demo_workspace,
                                                                                             mixed_folder, tmp_path):
    """Issue 26. Before: a failed `dvc exp run -S train.lr=fast` left lr: fast in params.yaml, and generate refused
    (train.lr: expected float) although it reads only render and generate; and its PNGs carried no settings text,
    while the app's carry them."""
    import json

    from a2i_core.diffusion.images import png_text

    ws = demo_workspace[0]
    project = _project_with(ws / "models", ws / "params.yaml", tmp_path / "p", train={"lr": "fast"})
    out = tmp_path / "out"
    result = _generate(str(mixed_folder / "dog.mp3"), "--out", str(out), "--project", str(project), "--steps", "1",
                       "--seed", "7", "--images-per-sound", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if line.startswith(("note:", "error:"))] == [
        f"note: {project}/params.yaml: train.lr: expected float, got str 'fast' (not read by generate)"]
    render = load_params(ws / "params.yaml").render
    for name, seed in (("dog-0.png", 7), ("dog-1.png", 8)):
        used = json.loads(png_text(out / name)["a2i"])  # the app's chunk and keys (a2i_core.serve.results)
        assert used == {"steps": 1, "guidance": render.guidance, "seed": seed, "images": 2, "size": render.size,
                        "sequence_fill": render.sequence_fill, "device": "cpu",
                        "render_seconds": used["render_seconds"]}
        assert used["render_seconds"] > 0
    # A mistake in what generate does read still refuses, with the line params.yaml's loader always gives.
    broken = _project_with(ws / "models", ws / "params.yaml", tmp_path / "b", train={"lr": "fast"},
                           render={"steps": "many"})
    refused = _generate(str(mixed_folder / "dog.mp3"), "--out", str(tmp_path / "none"), "--project", str(broken))
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"error: {broken}/params.yaml: render.steps: expected int, got str 'many'"
    assert not (tmp_path / "none").exists()


def test_output_names_stay_distinct():
    assert output_names(["s", "s", "s-2", "t"], 1) == [["s.png"], ["s-2.png"], ["s-2-2.png"], ["t.png"]]
    assert output_names(["s", "s"], 2) == [["s-0.png", "s-1.png"], ["s-2-0.png", "s-2-1.png"]]


def test_image_k_of_a_sound_takes_seed_plus_k(monkeypatch):
    """One rule, image_seeds, for `a2i generate --images-per-sound` (SoundToImage.render) and the app's Images."""
    from types import SimpleNamespace

    from a2i_core.diffusion.fills import SequenceFill
    from a2i_core.diffusion.render import RenderSettings
    from a2i_core.serve import generate
    from a2i_core.serve.generate import Sound

    assert image_seeds(7, 3) == [7, 8, 9] and image_seeds(0, 1) == [0] and image_seeds(5, 0) == []
    asked = {}

    def fake_render(pipe, pooled, sequences, *args, seeds):
        asked["seeds"] = seeds
        return [(j, Image.new("RGB", (8, 8))) for j in range(len(seeds))]

    monkeypatch.setattr(generate, "render", fake_render)
    artifact = SimpleNamespace(empty_sequence=np.zeros((4, 8), np.float32), empty_pooled=np.zeros(8, np.float32),
                               prompt_pooled=np.eye(2, 8, dtype=np.float32), prompt_sequences=None)
    machine = SimpleNamespace(artifact=artifact, pipe=None, device="cpu", dtype=None)
    sounds = [Sound(Path(name), np.zeros(8, np.float32), None, []) for name in ("a.wav", "b.wav")]
    SoundToImage.render(machine, sounds, RenderSettings(4, 3.0, 64, 5, 2), images_per_sound=3,
                        fill=SequenceFill("empty_prompt"))
    assert asked["seeds"] == image_seeds(5, 3) * 2  # each sound's images: 5, 6, 7
    assert [len(sound.images) for sound in sounds] == [3, 3]


def test_the_nearest_prompts_fill_from_the_command_line(demo_workspace, mixed_folder, tmp_path):
    ws = demo_workspace[0]
    dog = str(mixed_folder / "dog.mp3")
    common = ("--project", str(ws), "--steps", "2", "--device", "cpu")
    for fill in ("nearest_prompts", "empty_prompt"):
        result = _generate(dog, "--out", str(tmp_path / fill), "--sequence-fill", fill, *common)
        assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(tmp_path / "nearest_prompts/dog.png") as a, Image.open(tmp_path / "empty_prompt/dog.png") as b:
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() > 0  # the sequence is another
    # A mapper whose text stage stored no sequences cannot make that fill: one line, before any sound is read.
    mapper = tmp_path / "mapper"
    shutil.copytree(ws / "models/mapper", mapper)
    (mapper / PROMPT_SEQUENCES_NAME).unlink()
    none = _generate(dog, "--out", str(tmp_path / "none"), "--sequence-fill", "nearest_prompts", "--mapper",
                     str(mapper), *common)
    assert none.returncode == 1 and none.stderr.strip().splitlines() == [
        "error: render.sequence_fill nearest_prompts needs the prompts' sequences, and this mapper has none (trained "
        "with diffusion.store_sequence: false): use empty_prompt or zeros"]
    assert not (tmp_path / "none").exists()
    unknown = _generate(dog, "--out", str(tmp_path / "x"), "--sequence-fill", "nearest", *common)
    assert unknown.returncode == 2 and "'nearest' is not one of" in unknown.stderr


def test_artifact_round_trips_and_other_weights_are_refused(demo_workspace, tmp_path):
    ws = demo_workspace[0]
    artifact = MapperArtifact.load(ws / "models/mapper")
    artifact.save(tmp_path / "mapper")
    again = MapperArtifact.load(tmp_path / "mapper")
    assert again.prompts == artifact.prompts and np.array_equal(again.empty_sequence, artifact.empty_sequence)
    assert again.mapper.config == artifact.mapper.config
    # The bank's sequences (for the nearest_prompts fill): every prompt's, as embed_text stored them.
    stored = load_sequences(ws / "data/features/text", artifact.prompts)
    assert again.prompt_sequences.dtype == np.float16 and np.array_equal(again.prompt_sequences, stored)
    save_file({"sequence": torch.zeros(len(artifact.prompts) + 1, *artifact.empty_sequence.shape)},
              str(tmp_path / "mapper" / PROMPT_SEQUENCES_NAME))
    with pytest.raises(A2IError, match=rf"{PROMPT_SEQUENCES_NAME}: sequence: shape \(9, 109, 32\), but prompts\.json "
                                       r"and the empty prompt's sequence make it \(8, 109, 32\)$"):
        MapperArtifact.load(tmp_path / "mapper")
    # VGGish weights other than the mapper's training features came from.
    other = tmp_path / "vggish"
    shutil.copytree(ws / "models/audio_encoder", other)
    weights = torch.load(other / "vggish.pth", weights_only=True)
    weights["embeddings.4.bias"] += 1
    torch.save(weights, other / "vggish.pth")
    with pytest.raises(A2IError, match=r"vggish: encoder_sha256 is [0-9a-f]{12}\.\.\., but the mapper was trained "
                                       r"with [0-9a-f]{12}\.\.\."):
        SoundToImage.from_pretrained(ws / "models/mapper", other, ws / "models/sd3", torch.device("cpu"))


def test_another_sd3_is_refused_naming_both(demo_workspace, tmp_path):
    from a2i_core.diffusion.prepare import prepare_sd3

    ws = demo_workspace[0]
    prepare_sd3(str(ws / "models/sd3"), tmp_path / "sd3")  # the same weights, pinned as another local model
    pinned = re.escape(str((ws / "models/sd3").resolve()))
    with pytest.raises(A2IError, match=rf"diffusion_model is '{pinned}', but the mapper was trained with 'tiny'"):
        SoundToImage.from_pretrained(ws / "models/mapper", ws / "models/audio_encoder", tmp_path / "sd3",
                                     torch.device("cpu"))
