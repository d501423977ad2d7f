"""The three audio encoders side by side: VGGish, CLAP's audio tower and AST, on the same files, as the pipeline
runs them.

Each encoder is the real architecture with random weights (VGGish: torchvggish's 72 M parameters; CLAP: the default
``ClapAudioConfig``, HTSAT as in laion/clap-htsat-unfused, saved as a whole ``ClapModel`` with a small text tower and
its ``ClapFeatureExtractor``; AST: the default ``ASTConfig``, 86 M parameters, with the default
``ASTFeatureExtractor``), saved to a temporary folder and loaded back through ``load_audio_encoder``. Each runs in a
fresh process, so its peak resident memory is its own: it decodes every file at the encoder's rate
(``core.audio_io.decode``; CLAP through 16 kHz to 48 kHz) and embeds the waveforms with ``embed_waves`` (batches
of 64 windows for VGGish, 8 for CLAP and AST), after one untimed warm-up file. clips/s and audio s/s count decode
and embed together; torch keeps its default thread count.

    python benchmarks/audio_encoders.py --device cpu    # the run recorded in benchmarks/RESULTS.md
    python benchmarks/audio_encoders.py --tiny          # tiny models, 3 short files: seconds; what the tests run
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import soundfile as sf
import torch
from cells import run_cell  # benchmarks/cells.py, beside this script
from embed_audio import RATES, make_files  # the same mixed-rate, mono and stereo files as the embed_audio benchmark

from a2i_core.audio.encoder import WEIGHTS_FILE, load_audio_encoder
from a2i_core.audio.features import embed_waves
from a2i_core.core.audio_io import decode
from a2i_core.core.devices import resolve_device
from a2i_core.core.errors import quiet_hf_libraries
from a2i_core.offline.tiny_audio import TINY_CLAP_FE, save_tiny_ast, save_tiny_clap, tiny_vggish_weights

ENCODERS = ("vggish", "clap", "ast")
BATCH_SIZE = {"vggish": 64, "clap": 8, "ast": 8}
# A small text tower: the benchmark embeds audio only, and the CLAP loader reads the audio tower out of the whole model.
SMALL_CLAP_TEXT = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                       num_attention_heads=2, max_position_embeddings=80, bos_token_id=0, eos_token_id=2,
                       pad_token_id=1)


def save_encoder(kind: str, directory: Path, tiny: bool) -> None:
    """Write ``kind``'s model folder as the audio_encoder stage would leave it; real sizes with random weights."""
    directory.mkdir(parents=True)
    if kind == "vggish":
        torch.save(tiny_vggish_weights(seed=0), directory / WEIGHTS_FILE)  # the real architecture either way
    elif tiny:
        (save_tiny_clap if kind == "clap" else save_tiny_ast)(directory, seed=0)
    elif kind == "clap":
        quiet_hf_libraries()
        from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel

        torch.manual_seed(0)
        ClapModel(ClapConfig(audio_config=ClapAudioConfig().to_dict(), text_config=SMALL_CLAP_TEXT)) \
            .save_pretrained(str(directory))
        ClapFeatureExtractor(**TINY_CLAP_FE).save_pretrained(str(directory))  # laion's unfused settings
    else:
        quiet_hf_libraries()
        from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

        torch.manual_seed(0)
        ASTForAudioClassification(ASTConfig()).save_pretrained(str(directory))
        with warnings.catch_warnings():  # AST's 128 kaldi bands leave the lowest empty, as in the original
            warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
            ASTFeatureExtractor().save_pretrained(str(directory))


def child(weights: str, audio: str, device_name: str, batch_size: int) -> None:
    """Run in a fresh process: load, decode, embed; print the figures as one JSON line."""
    device = resolve_device(device_name)
    encoder = load_audio_encoder(weights, postprocess=False)
    frontend = encoder.place(device)
    paths = sorted(p for p in Path(audio).iterdir() if p.suffix in (".wav", ".flac"))
    # Warm-up, untimed: oneDNN's kernel selection, ffmpeg's first start, CUDA's context.
    embed_waves(encoder, frontend, [decode(paths[0], encoder.sample_rate)], batch_size, device)
    start = time.perf_counter()
    waves = [decode(p, encoder.sample_rate) for p in paths]
    decoded = time.perf_counter()
    frames = embed_waves(encoder, frontend, waves, batch_size, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    embedded = time.perf_counter()
    print(json.dumps({
        "dim": encoder.dim, "params_m": sum(p.numel() for p in encoder.model.parameters()) / 1e6,
        "windows": sum(f.shape[0] for f in frames), "out_dim": int(frames[0].shape[1]), "clips": len(paths),
        "decode_s": decoded - start, "embed_s": embedded - decoded,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }))


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=12.0)
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="tiny CLAP and AST, 3 short files: a smoke test")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.weights, args.audio, args.device, args.batch_size)
    if args.tiny:
        args.files, args.min_seconds, args.max_seconds = 3, 1.0, 3.0

    device = resolve_device(args.device)
    kinds = [k for k in args.encoders.split(",") if k]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_files(tmp / "audio", args.files, (args.min_seconds, args.max_seconds), seed=0)
        audio_seconds = sum(sf.info(p).duration for p in paths)
        for kind in kinds:
            save_encoder(kind, tmp / kind, args.tiny)
            results[kind] = run_cell(__file__, ["--child", "--weights", str(tmp / kind), "--audio", str(tmp / "audio"),
                                                "--device", args.device, "--batch-size", str(BATCH_SIZE[kind])],
                                     f"{kind} cell")

    cuda = device.type == "cuda"
    size = "tiny CLAP and AST" if args.tiny else "real sizes, random weights"
    print(f"\naudio encoders on {machine(device)}, torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"({size}): {len(paths)} files, {audio_seconds:.0f} s of audio, {min(RATES) // 1000}-{max(RATES) // 1000} "
          f"kHz, mono+stereo, {args.min_seconds:g}-{args.max_seconds:g} s; one fresh process each\n")
    print("| encoder | dim | params (M) | windows | decode s | embed s | clips/s | audio s/s | peak RSS MiB |"
          + (" peak CUDA MiB |" if cuda else ""))
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if cuda else ""))
    for kind in kinds:
        r = results[kind]
        total = r["decode_s"] + r["embed_s"]
        print(f"| {kind} | {r['out_dim']} | {r['params_m']:.2f} | {r['windows']} | {r['decode_s']:.2f} | "
              f"{r['embed_s']:.2f} | {r['clips'] / total:.2f} | {audio_seconds / total:.1f} | {r['peak_rss_mib']:.0f} |"
              + (f" {r['peak_cuda_mib']:.0f} |" if cuda else ""))


if __name__ == "__main__":
    sys.exit(main())
