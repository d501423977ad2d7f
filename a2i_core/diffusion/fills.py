"""Sequence fills: what fills the sequence positions a mapper does not predict (``render.sequence_fill``): the
empty prompt's sequence, zeros (as the original study rendered), or a softmax mix of the sequences of the prompts
nearest to the predicted pooled embedding."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from a2i_core.core.errors import A2IError
from a2i_core.core.params import RenderParams
from a2i_core.core.retrieval import nearest_rows

FILLS = ("empty_prompt", "zeros", "nearest_prompts")  # render.sequence_fill's values, in the render stage's order


@dataclass(frozen=True)
class SequenceFill:
    """What fills the sequence positions the mapper does not predict (render.sequence_fill and its settings)."""

    name: str
    k: int | None = None  # nearest_prompts: how many of the closest prompts are mixed
    temperature: float | None = None  # nearest_prompts: the softmax temperature over their cosines

    @classmethod
    def from_params(cls, params: RenderParams, name: str | None = None) -> SequenceFill:
        return cls(name or params.sequence_fill, params.nearest_k, params.nearest_temperature)

    def check(self, bank_sequences: np.ndarray | None) -> None:
        """A2IError when this fill cannot be made with a mapper whose bank holds ``bank_sequences``."""
        if self.name not in FILLS:
            raise A2IError(f"render.sequence_fill: {self.name!r}: not one of {', '.join(FILLS)}")
        if self.name == "nearest_prompts" and (self.k is None or self.temperature is None):
            raise A2IError("render.sequence_fill nearest_prompts needs render.nearest_k and render.nearest_temperature")
        if self.name == "nearest_prompts" and bank_sequences is None:
            raise A2IError("render.sequence_fill nearest_prompts needs the prompts' sequences, and this mapper has "
                           "none (trained with diffusion.store_sequence: false): use empty_prompt or zeros")

    def rows(self, pooled: np.ndarray, empty_sequence: np.ndarray, bank_pooled: np.ndarray,
             bank_sequences: np.ndarray | None) -> Callable[[int], np.ndarray]:
        """The fill of image i (L, D), for images of predicted pooled embeddings ``pooled`` (n, P).

        empty_prompt and zeros give every image the same sequence; nearest_prompts gives image i the mix of the
        prompt bank's sequences ``bank_sequences`` (K, L, D) weighted by ``nearest_prompt_weights``, so a sound gets
        the sequence of the prompts its pooled embedding is closest to, and a sound between prompts a mix of theirs.
        """
        self.check(bank_sequences)
        if self.name == "empty_prompt":
            empty = np.asarray(empty_sequence, np.float32)
            return lambda i: empty
        if self.name == "zeros":
            zeros = np.zeros(np.shape(empty_sequence), np.float32)
            return lambda i: zeros
        weights = nearest_prompt_weights(pooled, bank_pooled, self.k, self.temperature)  # (n, K)

        def mixed(i: int) -> np.ndarray:
            used = np.flatnonzero(weights[i])  # k prompts: only their sequences are read
            return np.einsum("k,kld->ld", weights[i, used], np.asarray(bank_sequences[used], np.float32))

        return mixed


def nearest_prompt_weights(pooled: np.ndarray, bank_pooled: np.ndarray, k: int, temperature: float) -> np.ndarray:
    """(n, K) mixing weights: for each pooled embedding (n, P), a softmax at ``temperature`` over the cosines of the
    ``k`` bank prompts (K, P) closest to it; zero for every other prompt. Each row sums to 1."""
    top, cosines = nearest_rows(pooled, bank_pooled, k)  # (n, k), (n, K)
    logits = np.take_along_axis(cosines, top, axis=1).astype(np.float64) / temperature
    mix = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights = np.zeros(cosines.shape, np.float32)
    np.put_along_axis(weights, top, (mix / mix.sum(axis=1, keepdims=True)).astype(np.float32), axis=1)
    return weights


def fill_sequence(fill: np.ndarray, head: np.ndarray | None) -> np.ndarray:
    """A (L, D) sequence: ``fill`` with its first N rows replaced by predicted tokens ``head`` (N, D)."""
    sequence = np.array(fill, np.float32, copy=True)
    if head is not None:
        sequence[: len(head)] = head
    return sequence
