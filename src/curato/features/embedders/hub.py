"""Embedders from model hubs, for users who are online or have the files locally.

* ``timm:NAME``: ``timm.create_model(NAME, pretrained=True, num_classes=0)``, preprocessed with the
  model's own data config (``resolve_model_data_config`` + ``create_transform``). NAME may also be
  ``hf-hub:org/repo``, ``local-dir:/path`` or simply a local directory (timm's ``config.json`` +
  weights, as ``timm.models.save_for_hf`` writes them); the option ``weights=FILE`` loads
  NAME's architecture with weights from a local file.
* ``open_clip:NAME[:PRETRAINED]``: ``open_clip.create_model_and_transforms(NAME, pretrained=...)``;
  PRETRAINED is a tag or a local checkpoint file; NAME may be ``hf-hub:org/repo``,
  ``local-dir:/path`` or a local directory (``open_clip_config.json`` + weights). Image vectors by
  default; option ``modality="text"`` embeds texts with the model's text tower. Unit length.
* ``hf:NAME_OR_PATH``: transformers ``AutoModel`` with ``AutoImageProcessor`` (images) or
  ``AutoTokenizer`` (texts; ``modality`` option, "auto" picks images when the repository has an
  image processor). Pooling: the model's pooled output when it has one, else the mean of the last
  hidden state (attention-masked for text; texts always use the masked mean unless told
  ``pooling="pooler"``, since BERT-style pooled outputs are not similarity embeddings).

All three need the ``hub`` extra. torch, torchvision, timm, open_clip and transformers are imported
on first use, after ``prepare_torchvision_import`` (a CUDA torchvision next to a CPU torch cannot
otherwise be imported, and transformers imports torchvision when it is installed).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curato.errors import CuratoError, InputError
from curato.features.embedders._common import (
    as_rgb_uint8,
    check_texts,
    file_sha256,
    prepare_torchvision_import,
    quiet_transformers,
    require,
)
from curato.features.embedders.base import Embedder

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
_CONFIG_SUFFIXES = (".json", ".txt", ".model")


def local_files_digest(path: Path) -> str:
    """sha256 over a local model's weights and configuration (a file, or a directory's files).

    Names and contents both count, so a retrained or reconfigured local model gets new settings.
    """
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.suffix in _WEIGHT_SUFFIXES + _CONFIG_SUFFIXES:
            digest.update(str(file.relative_to(path)).encode())
            digest.update(file_sha256(file).encode())
    return digest.hexdigest()


class _HubEmbedder(Embedder):
    """Shared machinery: lazy thread-safe loading, batching, input checks, numpy output."""

    library: str = ""  # the Python module the family needs
    prefix: str = ""  # the registry prefix before the colon

    def __init__(self, spec: str, device: str, batch_size: int, modality: str) -> None:
        self.name = f"{self.prefix}:{spec}"
        require(["torch", self.library], "torch,hub", self.name)
        if not spec:
            raise InputError(f"{self.prefix}: give a model after the colon, e.g. {self.prefix}:NAME")
        if batch_size < 1:
            raise InputError(f"{self.name}: batch_size must be at least 1")
        self.spec = spec
        self.device = device
        self.batch_size = int(batch_size)
        self.modality = modality
        self._lock = threading.Lock()
        self._loaded = False
        self._dim = 0
        self._details: dict[str, Any] = {}
        self._encode: Callable[[list[Any]], Any] | None = None

    @property
    def dim(self) -> int:
        """Vector length, known once the model is loaded (this loads it)."""
        self._ensure_loaded()
        return self._dim

    def settings(self) -> dict[str, Any]:
        """Library, model, weights identity, preprocessing, pooling and dim (this loads the model)."""
        self._ensure_loaded()
        return {"embedder": self.name, "library": self.library, **self._details, "dim": self._dim}

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """(len(items), dim) float32; items are HxWx3 uint8 RGB arrays or str, by modality."""
        if self.modality == "text":
            checked: list[Any] = check_texts(items, self.name)
        else:
            checked = [as_rgb_uint8(item, index, self.name) for index, item in enumerate(items)]
        self._ensure_loaded()
        if not checked:
            return np.zeros((0, self._dim), dtype=np.float32)
        import torch

        assert self._encode is not None
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(checked), self.batch_size):
                vectors = self._encode(checked[start:start + self.batch_size])
                outputs.append(vectors.detach().float().reshape(vectors.shape[0], -1).cpu().numpy())
        return np.ascontiguousarray(np.concatenate(outputs), dtype=np.float32)

    def _ensure_loaded(self) -> None:
        with self._lock:
            if self._loaded:
                return
            prepare_torchvision_import()
            try:
                self._load()
            except CuratoError:
                raise
            except Exception as error:  # the libraries raise anything from OSError to KeyError
                raise CuratoError(
                    f"{self.name}: cannot load the model ({type(error).__name__}: {_first_line(error)}); "
                    "check the name, or that the files exist, or that this machine can reach the hub"
                ) from error
            self._loaded = True

    def _load(self) -> None:
        raise NotImplementedError

    def _probe_dim(self, sample: Any) -> None:
        """Learn the vector length from one forward pass (heads differ too much to predict it)."""
        import torch

        assert self._encode is not None
        with torch.inference_mode():
            self._dim = int(np.prod(self._encode([sample]).shape[1:]))


class TimmEmbedder(_HubEmbedder):
    """``timm:NAME``: a timm model's pooled pre-classifier features."""

    library = prefix = "timm"

    def __init__(
        self, spec: str, weights: str | None = None, device: str = "cpu", batch_size: int = 32
    ) -> None:
        """``weights``: a local checkpoint for NAME's architecture (instead of downloading)."""
        super().__init__(spec, device, batch_size, "image")
        self.weights = Path(weights).expanduser() if weights else None
        if self.weights is not None and not self.weights.is_file():
            raise InputError(f"{self.name}: weights file {self.weights} does not exist")
        local = Path(spec).expanduser()
        self.model_name = f"local-dir:{local}" if local.is_dir() else spec

    def _load(self) -> None:
        import timm
        import torch
        from PIL import Image

        options: dict[str, Any] = {"pretrained": True, "num_classes": 0}
        if self.weights is not None:
            options["pretrained_cfg_overlay"] = {"file": str(self.weights)}
        model = timm.create_model(self.model_name, **options).eval().to(self.device)
        config = timm.data.resolve_model_data_config(model)
        transform = timm.data.create_transform(**config, is_training=False)

        def encode(images: list[np.ndarray]) -> Any:
            batch = torch.stack([transform(Image.fromarray(image)) for image in images]).to(self.device)
            return model(batch)

        self._encode = encode
        self._details = {
            "model": self.model_name,
            "weights": self._weights_identity(model),
            "data_config": {key: _plain(value) for key, value in sorted(config.items())},
            "pooling": "timm num_classes=0 (pre-logits)",
        }
        self._probe_dim(np.zeros((8, 8, 3), dtype=np.uint8))

    def _weights_identity(self, model: Any) -> str:
        if self.weights is not None:
            return f"sha256:{file_sha256(self.weights)}"
        if self.model_name.startswith("local-dir:"):
            return f"sha256:{local_files_digest(Path(self.model_name[len('local-dir:'):]))}"
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        return str(cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("tag") or self.model_name)


class OpenClipEmbedder(_HubEmbedder):
    """``open_clip:NAME[:PRETRAINED]``: CLIP image (or text) embeddings, L2-normalised."""

    library = prefix = "open_clip"

    def __init__(self, spec: str, modality: str = "image", device: str = "cpu", batch_size: int = 32) -> None:
        """``modality``: "image" (default) or "text", i.e. which tower embeds the items."""
        if modality not in ("image", "text"):
            raise InputError(f"open_clip:{spec}: modality must be 'image' or 'text', got {modality!r}")
        super().__init__(spec, device, batch_size, modality)
        self.model_name, self.pretrained = parse_open_clip_spec(spec)

    def _load(self) -> None:
        import open_clip
        import torch
        from PIL import Image

        model, _, preprocess = open_clip.create_model_and_transforms(
            self.model_name, pretrained=self.pretrained, device=self.device
        )
        model.eval()
        if self.modality == "text":
            tokenizer = open_clip.get_tokenizer(self.model_name)

            def encode(texts: list[str]) -> Any:
                tokens = tokenizer(texts).to(self.device)
                return torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)

            probe: Any = "probe"
        else:

            def encode(images: list[np.ndarray]) -> Any:
                batch = torch.stack([preprocess(Image.fromarray(image)) for image in images]).to(self.device)
                return torch.nn.functional.normalize(model.encode_image(batch), dim=-1)

            probe = np.zeros((8, 8, 3), dtype=np.uint8)
        self._encode = encode
        self._details = {
            "model": self.model_name,
            "weights": self._weights_identity(),
            "modality": self.modality,
            "preprocess": (
                " ".join(repr(preprocess).split()) if self.modality == "image" else "open_clip tokenizer"
            ),
            "normalised": True,
        }
        self._probe_dim(probe)

    def _weights_identity(self) -> str:
        if self.model_name.startswith("local-dir:"):
            return f"sha256:{local_files_digest(Path(self.model_name[len('local-dir:'):]))}"
        if self.pretrained and Path(self.pretrained).expanduser().is_file():
            return f"sha256:{file_sha256(Path(self.pretrained).expanduser())}"
        return self.pretrained or "random init (no pretrained tag)"


def parse_open_clip_spec(spec: str) -> tuple[str, str | None]:
    """(model name for open_clip, pretrained tag or file or None) from ``NAME[:PRETRAINED]``.

    ``hf-hub:`` and ``local-dir:`` names contain a colon of their own and carry their weights;
    a bare local directory is treated as ``local-dir:``.
    """
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    if Path(spec).expanduser().is_dir():
        return f"local-dir:{Path(spec).expanduser()}", None
    name, _, pretrained = spec.partition(":")
    return name, pretrained or None


class HFEmbedder(_HubEmbedder):
    """``hf:NAME_OR_PATH``: a transformers model's pooled (or mean) hidden state."""

    library = "transformers"
    prefix = "hf"

    def __init__(
        self,
        spec: str,
        modality: str = "auto",
        pooling: str = "auto",
        revision: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        """``modality``: "auto", "image" or "text"; ``pooling``: "auto", "pooler" or "mean";
        ``revision``: a hub branch, tag or commit."""
        if modality not in ("auto", "image", "text"):
            raise InputError(f"hf:{spec}: modality must be 'auto', 'image' or 'text', got {modality!r}")
        if pooling not in ("auto", "pooler", "mean"):
            raise InputError(f"hf:{spec}: pooling must be 'auto', 'pooler' or 'mean', got {pooling!r}")
        super().__init__(spec, device, batch_size, "image" if modality == "auto" else modality)
        self.requested_modality = modality
        self.pooling = pooling
        self.revision = revision
        if modality == "auto":
            self.modality = self._guess_modality()

    def _guess_modality(self) -> str:
        """Image if the repository has an image-processor config, else text. Local paths are
        inspected directly; for hub names this loads the processor once."""
        local = Path(self.spec).expanduser()
        if local.is_dir():
            return "image" if (local / "preprocessor_config.json").is_file() else "text"
        prepare_torchvision_import()
        from transformers import AutoImageProcessor

        try:
            with quiet_transformers():
                AutoImageProcessor.from_pretrained(self.spec, revision=self.revision)
        except (OSError, ValueError, KeyError):
            return "text"
        return "image"

    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        source = str(Path(self.spec).expanduser()) if Path(self.spec).expanduser().is_dir() else self.spec
        with quiet_transformers():
            model = AutoModel.from_pretrained(source, revision=self.revision).eval().to(self.device)
            if self.modality == "image":
                processor = AutoImageProcessor.from_pretrained(source, revision=self.revision)
            else:
                processor = AutoTokenizer.from_pretrained(source, revision=self.revision)
        pooling = self.pooling
        if pooling == "auto":
            pooling = "mean" if self.modality == "text" else "pooler"

        def pooled(outputs: Any, mask: Any | None) -> Any:
            pooler = getattr(outputs, "pooler_output", None)
            if pooling == "pooler" and pooler is not None:
                return pooler.flatten(1)
            hidden = outputs.last_hidden_state
            if hidden.ndim == 4:  # convolutional models: (n, channels, h, w)
                return hidden.mean(dim=(2, 3))
            if mask is None:
                return hidden.mean(dim=1)
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

        if self.modality == "image":

            def encode(images: list[np.ndarray]) -> Any:
                inputs = processor(images=images, return_tensors="pt", input_data_format="channels_last")
                pixel_values = inputs["pixel_values"].to(self.device)
                if hasattr(model, "get_image_features"):  # two-tower models (CLIP, SigLIP)
                    return _as_tensor(model.get_image_features(pixel_values=pixel_values))
                return pooled(model(pixel_values=pixel_values), None)

            probe: Any = np.zeros((8, 8, 3), dtype=np.uint8)
        else:

            def encode(texts: list[str]) -> Any:
                inputs = processor(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
                if hasattr(model, "get_text_features"):
                    return _as_tensor(model.get_text_features(**inputs))
                return pooled(model(**inputs), inputs.get("attention_mask"))

            probe = "probe"
        self._encode = encode
        local = Path(self.spec).expanduser()
        commit = getattr(model.config, "_commit_hash", None)
        self._details = {
            "model": self.spec,
            "weights": f"sha256:{local_files_digest(local)}" if local.exists() else (commit or self.revision),
            "modality": self.modality,
            "pooling": pooling,
            "preprocess": type(processor).__name__,
            "revision": self.revision,
        }
        self._probe_dim(probe)


def _as_tensor(output: Any) -> Any:
    """``get_*_features`` return a tensor in older transformers, a model output in newer ones."""
    if hasattr(output, "pooler_output") and output.pooler_output is not None:
        return output.pooler_output
    return output


def _plain(value: Any) -> Any:
    """JSON-friendly form of a data-config value (tuples become lists)."""
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
