"""``timm:``, ``open_clip:`` and ``hf:`` embedders, offline.

Each test creates a small real model with the library itself, saves it the way that library saves
models, and loads and embeds it through curato's registry: the same code path a user's
downloaded model takes, minus the download.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curato.errors import CuratoError, InputError
from curato.features.embedders import get_embedder
from curato.features.embedders._common import prepare_torchvision_import
from curato.features.embedders.hub import parse_open_clip_spec


def photos() -> list[np.ndarray]:
    import skimage.data

    grey = skimage.data.camera()
    return [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(),
            np.repeat(grey[:, :, None], 3, axis=2)[:300, :200]]


def import_or_skip(module: str):
    """The hub library, imported the way curato imports it; skipped with the reason if it cannot be."""
    pytest.importorskip("torch", reason="the hub embedders need torch (pip install 'curato[hub]')")
    prepare_torchvision_import()
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install 'curato[hub]')")


def check_embedding(name: str, items: list, dim: int, **options) -> np.ndarray:
    embedder = get_embedder(name, **options)
    vectors = embedder.embed(items)
    assert vectors.shape == (len(items), dim) and vectors.dtype == np.float32
    assert embedder.dim == dim and np.isfinite(vectors).all()
    np.testing.assert_array_equal(embedder.embed(items), vectors)  # deterministic
    np.testing.assert_allclose(embedder.embed(items[1:2])[0], vectors[1], atol=1e-5)  # batch-independent
    assert len({tuple(np.round(row, 5)) for row in vectors}) == len(items)  # different inputs differ
    return vectors


def test_timm_weights_file_and_local_dir(tmp_path):
    timm = import_or_skip("timm")
    import torch
    from safetensors.torch import save_file
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False)
    weights = tmp_path / "test_vit.safetensors"
    save_file(model.state_dict(), weights)
    vectors = check_embedding("timm:test_vit", photos(), model.num_features, weights=str(weights))
    settings = get_embedder("timm:test_vit", weights=str(weights)).settings()
    assert settings["weights"].startswith("sha256:")
    assert settings["data_config"]["input_size"] == [3, 160, 160]

    save_for_hf(model, str(tmp_path / "folder"), safe_serialization=True)
    from_folder = check_embedding(f"timm:{tmp_path / 'folder'}", photos(), model.num_features)
    np.testing.assert_allclose(from_folder, vectors, atol=1e-6)

    torch.manual_seed(1)
    save_file(timm.create_model("test_vit", pretrained=False).state_dict(), weights)
    retrained = get_embedder("timm:test_vit", weights=str(weights))
    assert retrained.settings()["weights"] != settings["weights"]  # new weights, new settings
    assert not np.allclose(retrained.embed(photos()), vectors)


def test_timm_unknown_model_and_missing_file_are_clear_errors(tmp_path):
    import_or_skip("timm")
    with pytest.raises(InputError, match="does not exist"):
        get_embedder("timm:test_vit", weights=str(tmp_path / "nope.safetensors"))
    with pytest.raises(CuratoError, match="timm:no_such_architecture: cannot load the model"):
        get_embedder("timm:no_such_architecture").embed(photos()[:1])


def tiny_open_clip(folder: Path, seed: int) -> None:
    """An open_clip model folder (open_clip_config.json + safetensors weights) of a tiny CLIP."""
    open_clip = import_or_skip("open_clip")
    import torch
    from safetensors.torch import save_file

    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    folder.mkdir(parents=True)
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    folder_config = {"model_cfg": config, "preprocess_cfg": preprocess}
    (folder / "open_clip_config.json").write_text(json.dumps(folder_config))
    torch.manual_seed(seed)
    save_file(open_clip.CLIP(**config).state_dict(), folder / "open_clip_model.safetensors")


def test_open_clip_local_folder_images_and_texts(tmp_path):
    tiny_open_clip(tmp_path / "clip", seed=0)
    images = check_embedding(f"open_clip:{tmp_path / 'clip'}", photos(), 32)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    texts = check_embedding(f"open_clip:local-dir:{tmp_path / 'clip'}", ["a cat", "a dog", "a car"], 32,
                            modality="text")
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    settings = get_embedder(f"open_clip:{tmp_path / 'clip'}").settings()
    assert settings["weights"].startswith("sha256:") and "Normalize" in settings["preprocess"]
    with pytest.raises(InputError, match="modality"):
        get_embedder(f"open_clip:{tmp_path / 'clip'}", modality="audio")


def test_open_clip_spec_parsing(tmp_path):
    assert parse_open_clip_spec("ViT-B-32") == ("ViT-B-32", None)
    assert parse_open_clip_spec("ViT-B-32:laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert parse_open_clip_spec("ViT-B-32:/models/clip.pt") == ("ViT-B-32", "/models/clip.pt")
    assert parse_open_clip_spec("hf-hub:laion/CLIP-ViT-B-32") == ("hf-hub:laion/CLIP-ViT-B-32", None)
    assert parse_open_clip_spec(str(tmp_path)) == (f"local-dir:{tmp_path}", None)


def test_hf_vision_models_pooled_and_convolutional(tmp_path):
    import_or_skip("transformers")
    import torch
    from transformers import ResNetConfig, ResNetModel, ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    vit = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=32, patch_size=8)
    ViTModel(vit).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    check_embedding(f"hf:{tmp_path / 'vit'}", photos(), 32)
    embedder = get_embedder(f"hf:{tmp_path / 'vit'}", pooling="mean")
    assert embedder.modality == "image" and embedder.settings()["pooling"] == "mean"
    check_embedding(f"hf:{tmp_path / 'vit'}", photos(), 32, pooling="mean")

    resnet = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ResNetModel(resnet).save_pretrained(tmp_path / "resnet")
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "resnet")
    check_embedding(f"hf:{tmp_path / 'resnet'}", photos(), 16)


def test_hf_two_tower_model_uses_its_image_features(tmp_path):
    import_or_skip("transformers")
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 32},
        vision_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "intermediate_size": 32, "image_size": 32, "patch_size": 8},
        projection_dim=12,
    )
    CLIPModel(config).save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "clip"
    )
    check_embedding(f"hf:{tmp_path / 'clip'}", photos(), 12)  # the projection, not a hidden state


def test_hf_text_model_with_its_tokenizer(tmp_path):
    import_or_skip("transformers")
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["the", "cat", "dog", "sat", "on", "mat", "a", "car", "drove", "fast"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(tmp_path / "bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(tmp_path / "bert")
    texts = ["the cat sat on the mat", "a dog", "a car drove fast on the mat today"]
    check_embedding(f"hf:{tmp_path / 'bert'}", texts, 16)
    embedder = get_embedder(f"hf:{tmp_path / 'bert'}")
    assert embedder.modality == "text" and embedder.settings()["pooling"] == "mean"
    with pytest.raises(InputError, match="item 0 is ndarray"):
        embedder.embed(photos()[:1])


def test_hf_missing_model_is_a_clear_error(tmp_path):
    import_or_skip("transformers")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CuratoError, match="cannot load the model"):
        get_embedder(f"hf:{tmp_path / 'empty'}", modality="image").embed(photos()[:1])
