"""The reference embedding: the model's own processor and get_image_features, called directly on a file."""

import numpy as np


def reference_embeddings(model_dir: str, paths: list[str]) -> np.ndarray:
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, CLIPModel

    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = CLIPModel.from_pretrained(model_dir).eval()
    images = [Image.open(p).convert("RGB") for p in paths]
    with torch.inference_mode():
        output = model.get_image_features(**processor(images=images, return_tensors="pt"))
    return output.pooler_output.numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)
