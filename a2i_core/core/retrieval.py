"""Retrieval by cosine: which rows of a bank (prompt embeddings) lie closest to each prediction."""

from __future__ import annotations

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def nearest_rows(x: np.ndarray, bank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``x`` (n, P), the indices (n, k) of the ``k`` rows of ``bank`` (K, P) closest by cosine,
    closest first (ties to the earlier row), and all the cosines (n, K)."""
    cosines = normalise(np.asarray(x, np.float32)) @ normalise(np.asarray(bank, np.float32)).T  # (n, K)
    return np.argsort(-cosines, axis=1, kind="stable")[:, :k], cosines
