"""What every embedder provides. Concrete embedders live beside this module; the registry
(``curato.features.embedders.get_embedder``) builds them by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np


class Embedder(ABC):
    """Turns a batch of decoded images (HxWx3 uint8 RGB arrays of any size) or texts into vectors.

    ``settings()`` must change whenever the vectors would change (weights, input size, options):
    the feature store discards vectors computed with other settings.
    """

    name: str
    modality: Literal["image", "text"] = "image"
    batch_size: int = 32

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of each vector."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that determines the output (recorded in the runs table and feature store)."""

    @abstractmethod
    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """(len(items), dim) float32 vectors; items are RGB uint8 arrays or strings by modality."""


class PrecomputedEmbedder(ABC):
    """Vectors that already exist (a user's .npy); looked up by sample id instead of computed."""

    name: str
    modality: Literal["image", "text", "any"] = "any"

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Where the vectors came from."""

    @abstractmethod
    def lookup(self, sample_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors for the ids found, boolean found mask over ``sample_ids``)."""
