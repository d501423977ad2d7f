"""The trained mapper as a self-contained inference artifact (``models/mapper/``).

Besides the mapper's weights and config (whose provenance names the audio encoder and its sha256, the
postprocess setting, the frontend, the diffusion model and its widths), the directory holds what rendering and
the nearest-prompt display need: the empty-prompt guidance embeddings and the prompt bank (each prompt's pooled
embedding and, when the text stage stored them, its sequence, for render.sequence_fill nearest_prompts); and,
written by the train stage, its model card (README.md), so the folder can be uploaded to the Hugging Face Hub as it
is. A mapper is loaded from such a folder or, by its Hub id ``owner/name[@revision]``, from the Hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from a2i_core.core.errors import A2IError
from a2i_core.core.files import atomic_dir, dir_identity
from a2i_core.core.hub import local_folder
from a2i_core.core.retrieval import nearest_rows
from a2i_core.mapper.model import CONFIG_NAME, WEIGHTS_NAME, AudioToSD3Mapper, read_json, read_tensors

GUIDANCE_NAME = "guidance.safetensors"
PROMPTS_NAME = "prompts.json"
PROMPT_BANK_NAME = "prompt_bank.safetensors"
# Optional: float16, (prompts, L, D) (SD3 Medium: 2.7 MB a prompt). Its own file, so a mapper without it is whole.
PROMPT_SEQUENCES_NAME = "prompt_sequences.safetensors"
PROMPT_SEQUENCES_DTYPE = "F16"  # safetensors' name for float16; the other files hold float32 (WEIGHTS_DTYPE)
CARD_NAME = "README.md"  # the name the Hub shows as the model card
FILES = [CONFIG_NAME, WEIGHTS_NAME, GUIDANCE_NAME, PROMPTS_NAME, PROMPT_BANK_NAME, PROMPT_SEQUENCES_NAME,
         CARD_NAME]  # what a Hub copy holds


@dataclass
class MapperArtifact:
    mapper: AudioToSD3Mapper
    empty_pooled: np.ndarray  # (P,)
    empty_sequence: np.ndarray  # (L, D)
    prompts: list[str]
    prompt_pooled: np.ndarray  # (K, P)
    prompt_sequences: np.ndarray | None = None  # (K, L, D) float16, or None when the text stage stored none

    def save(self, directory: str | Path, card: str | None = None) -> None:
        """Write the artifact whole (an atomic swap), with ``card`` as its README.md when given."""
        with atomic_dir(directory) as tmp:
            self.mapper.save_pretrained(tmp)
            save_file({"empty_pooled": torch.from_numpy(np.ascontiguousarray(self.empty_pooled, np.float32)),
                       "empty_sequence": torch.from_numpy(np.ascontiguousarray(self.empty_sequence, np.float32))},
                      str(tmp / GUIDANCE_NAME))
            save_file({"pooled": torch.from_numpy(np.ascontiguousarray(self.prompt_pooled, np.float32))},
                      str(tmp / PROMPT_BANK_NAME))
            if self.prompt_sequences is not None:
                save_file({"sequence": torch.from_numpy(np.ascontiguousarray(self.prompt_sequences, np.float16))},
                          str(tmp / PROMPT_SEQUENCES_NAME))
            (tmp / PROMPTS_NAME).write_text(json.dumps(self.prompts, indent=1) + "\n")
            if card is not None:  # UTF-8 whatever the locale: labels may be in any script
                (tmp / CARD_NAME).write_text(card, encoding="utf-8", newline="\n")

    @classmethod
    def load(cls, location: str | Path) -> MapperArtifact:
        """The artifact in a folder or, when no such folder exists, at a Hub id ``owner/name[@revision]``; read whole
        from one version: a retrain may swap the directory while it is being read."""
        directory = local_folder(location, FILES, what="mapper")
        for _ in range(20):  # each retry follows a completed swap: a retrain makes one, a busy machine delays reads
            before = dir_identity(directory)
            try:
                artifact = cls._read(directory)
            except Exception:
                if dir_identity(directory) != before:
                    continue  # files of two versions did not fit together: read the new one whole
                raise
            if dir_identity(directory) == before:
                return artifact
        raise A2IError(f"{directory}: kept changing while being read (is a training run replacing it?)")

    @classmethod
    def _read(cls, directory: Path) -> MapperArtifact:
        mapper = AudioToSD3Mapper.from_pretrained(directory)
        missing = [n for n in (GUIDANCE_NAME, PROMPTS_NAME, PROMPT_BANK_NAME) if not (directory / n).is_file()]
        if missing:
            raise A2IError(f"{directory}: incomplete mapper artifact, missing {', '.join(missing)} (rerun train)")
        config = mapper.config
        prompts = read_json(directory / PROMPTS_NAME)
        if not (isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)):
            raise A2IError(f"{directory / PROMPTS_NAME}: expected a list of prompts (strings)")
        # Shapes checked here, so a file from elsewhere fails now in one line, not mid-render.
        guidance = read_tensors(directory / GUIDANCE_NAME, {
            "empty_pooled": (config.pooled_dim,), "empty_sequence": (None, config.token_width or None)},
            "the mapper makes it")
        bank = read_tensors(directory / PROMPT_BANK_NAME, {"pooled": (len(prompts), config.pooled_dim)},
                            f"the mapper and {PROMPTS_NAME} make it")
        # read_tensors has checked each dtype and that every value is finite: a NaN here renders a black image.
        empty_sequence = guidance["empty_sequence"].numpy()
        sequences = None
        if (directory / PROMPT_SEQUENCES_NAME).is_file():
            shape = (len(prompts), *empty_sequence.shape)
            sequences = read_tensors(directory / PROMPT_SEQUENCES_NAME, {"sequence": shape},
                                     f"{PROMPTS_NAME} and the empty prompt's sequence make it",
                                     PROMPT_SEQUENCES_DTYPE)["sequence"].numpy()
        return cls(mapper, guidance["empty_pooled"].numpy(), empty_sequence, prompts, bank["pooled"].numpy(),
                   sequences)

    def nearest_prompts(self, pooled: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """For each predicted pooled embedding (n, P), the k closest prompts by cosine, with the cosine."""
        order, sims = nearest_rows(pooled, self.prompt_pooled, k)  # (n, k), (n, K)
        return [[(self.prompts[j], float(sims[i, j])) for j in row] for i, row in enumerate(order)]
