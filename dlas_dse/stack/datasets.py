"""Layer 1, datasets: train/validation splits as normalised NCHW float32 arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from dlas_dse.registry import DATASETS, Param


@dataclass
class Dataset:
    """Train and validation images (N, 3, H, W float32, normalised) with integer labels."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.train_x.shape[1:])

    def validation_subset(self, max_samples: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The validation split, or a stratified subset of ``max_samples`` images of it."""
        if max_samples is None or max_samples >= len(self.val_y):
            return self.val_x, self.val_y
        index, _ = train_test_split(np.arange(len(self.val_y)), train_size=max_samples,
                                    random_state=seed, stratify=self.val_y)
        index = np.sort(index)
        return self.val_x[index], self.val_y[index]


def _split_and_normalise(name: str, images: np.ndarray, labels: np.ndarray, params: dict) -> Dataset:
    """Stratified split, then per-channel standardisation with the training split's statistics."""
    train_x, val_x, train_y, val_y = train_test_split(
        images, labels, test_size=params["val_fraction"], random_state=params["split_seed"],
        stratify=labels)
    mean = train_x.mean(axis=(0, 2, 3), keepdims=True)
    std = train_x.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    return Dataset(name, ((train_x - mean) / std).astype(np.float32), train_y.astype(np.int64),
                   ((val_x - mean) / std).astype(np.float32), val_y.astype(np.int64),
                   int(labels.max()) + 1)


@DATASETS.register("digits", image_size=Param(int, default=32, low=8, high=224,
                                              help="side of the square RGB image the 8x8 digits are resized to"))
def digits(params: dict) -> Dataset:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes), resized to RGB."""
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    size = params["image_size"]
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return _split_and_normalise("digits", images.repeat(1, 3, 1, 1).numpy(), bunch.target, params)


def load_dataset(params: dict) -> Dataset:
    """Load the dataset named by ``params["name"]`` with its parameters."""
    return DATASETS.get(params["name"]).function(params)
