"""Layer 1, datasets: train/validation splits as normalised NCHW float32 arrays.

``digits`` is bundled with scikit-learn. ``cifar10`` and ``imagenet`` are read from the data
directory: ``--data-dir`` or the ``DLAS_DATA_DIR`` environment variable (default ``./data``).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import DATASETS, Param, PreflightError

torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")
sklearn_datasets = lazy_import("sklearn.datasets")
model_selection = lazy_import("sklearn.model_selection")

DATA_DIR_VARIABLE = "DLAS_DATA_DIR"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DatasetError(PreflightError):
    """A dataset's files are missing or unreadable; the message says where we looked and what to do."""


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
        return tuple(self.val_x.shape[1:])

    def images(self, split: str) -> np.ndarray:
        """The images of ``split``: "train" or "validation"."""
        return {"train": self.train_x, "validation": self.val_x}[split]

    def validation_subset(self, max_samples: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The validation split, or a stratified subset of ``max_samples`` images of it."""
        index = stratified_subset(self.val_y, max_samples, seed)
        return self.val_x[index], self.val_y[index]


def stratified_subset(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a class-stratified subset of ``size`` items (all items when None or more)."""
    if size is None or size >= len(labels):
        return np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 and size >= len(counts) else None
    index, _ = model_selection.train_test_split(np.arange(len(labels)), train_size=size, random_state=seed, stratify=stratify)
    return np.sort(index)


def data_directory() -> Path:
    """Where cifar10 and imagenet are looked for: ``$DLAS_DATA_DIR`` or ``./data``."""
    return Path(os.environ.get(DATA_DIR_VARIABLE, "data")).expanduser().resolve()


def _normalise(images: np.ndarray, mean: tuple, std: tuple) -> np.ndarray:
    shape = (1, len(mean), 1, 1)
    return ((images - np.reshape(mean, shape)) / np.reshape(std, shape)).astype(np.float32)


# --------------------------------------------------------------------------- digits

@DATASETS.register(
    "digits",
    image_size=Param(int, default=32, low=8, high=224, help="side of the RGB image the 8x8 digits become"),
    val_fraction=Param(float, default=0.2, low=0.05, high=0.5, help="share held out for validation"))
def digits(params: dict) -> Dataset:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes), resized to RGB."""
    bunch = sklearn_datasets.load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    size = params["image_size"]
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.repeat(1, 3, 1, 1).numpy()
    train_x, val_x, train_y, val_y = model_selection.train_test_split(
        images, bunch.target, test_size=params["val_fraction"], random_state=params["split_seed"],
        stratify=bunch.target)
    mean, std = train_x.mean(axis=(0, 2, 3)), train_x.std(axis=(0, 2, 3)) + 1e-6
    return Dataset("digits", _normalise(train_x, mean, std), train_y.astype(np.int64),
                   _normalise(val_x, mean, std), val_y.astype(np.int64), 10)


# --------------------------------------------------------------------------- CIFAR-10

def cifar10_folder(params: dict) -> Path:
    """The folder holding CIFAR-10's python batches; downloads them when ``download`` is set."""
    root = data_directory()
    candidates = [root / CIFAR10_FOLDER, root / "cifar10" / CIFAR10_FOLDER, root]
    needed = (*CIFAR10_TRAIN_FILES, "test_batch")
    for folder in candidates:
        if all((folder / name).is_file() for name in needed):
            return folder
    if params.get("download"):
        import torchvision

        try:
            torchvision.datasets.CIFAR10(str(root), download=True)
        except Exception as error:  # noqa: BLE001  (network errors of every kind)
            raise DatasetError(f"downloading CIFAR-10 into {root} failed: {error}") from None
        return root / CIFAR10_FOLDER
    raise DatasetError(
        f"CIFAR-10 not found: looked for {', '.join(needed)} in {', '.join(map(str, candidates))}. "
        f"Get it with `mkdir -p {root} && curl -L {CIFAR10_URL} | tar xz -C {root}`, point --data-dir "
        f"(or {DATA_DIR_VARIABLE}) at the folder that holds {CIFAR10_FOLDER}/, or set `download: true` "
        "in the space's dataset block where this machine can reach the internet.")


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32 uint8) and labels of one CIFAR-10 python pickle batch."""
    try:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{path} is not a readable CIFAR-10 batch ({type(error).__name__}: {error}); "
                           f"delete it and fetch CIFAR-10 again from {CIFAR10_URL}") from None
    if len(images) != len(labels) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DatasetError(f"{path} is corrupt: {len(images)} images, {len(labels)} labels in "
                           f"[{labels.min(initial=0)}, {labels.max(initial=0)}]; fetch CIFAR-10 again")
    return images, labels


def check_cifar10(layers: dict) -> None:
    """Preflight: the batches exist (or are downloaded) and the test batch is readable."""
    read_cifar10_batch(cifar10_folder(layers["dataset"]) / "test_batch")


@DATASETS.register(
    "cifar10", preflight=check_cifar10,
    download=Param(bool, default=False, help="let torchvision download CIFAR-10 if it is missing"),
    train_samples=Param(int, default=50000, low=10, high=50000, help="stratified subset of the training set"),
    val_samples=Param(int, default=10000, low=10, high=10000, help="stratified subset of the test set"))
def cifar10(params: dict) -> Dataset:
    """CIFAR-10 (50,000 training and 10,000 test 32x32 images, 10 classes) from the data directory."""
    folder = cifar10_folder(params)
    batches = [read_cifar10_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    train_x = np.concatenate([b[0] for b in batches])
    train_y = np.concatenate([b[1] for b in batches])
    val_x, val_y = read_cifar10_batch(folder / "test_batch")
    train = stratified_subset(train_y, params["train_samples"], params["split_seed"])
    val = stratified_subset(val_y, params["val_samples"], params["split_seed"])
    return Dataset("cifar10", _normalise(train_x[train] / 255.0, CIFAR10_MEAN, CIFAR10_STD), train_y[train],
                   _normalise(val_x[val] / 255.0, CIFAR10_MEAN, CIFAR10_STD), val_y[val], 10)


# --------------------------------------------------------------------------- ImageNet

def imagenet_folder() -> Path:
    """The ImageFolder validation directory: one sub-folder of images per class."""
    root = data_directory()
    candidates = [root / "imagenet" / "val", root / "val"]
    for folder in candidates:
        if folder.is_dir() and any(child.is_dir() for child in folder.iterdir()):
            return folder
    raise DatasetError(
        f"ImageNet validation images not found: looked for class folders in "
        f"{', '.join(map(str, candidates))}. Put the ILSVRC2012 validation set there as one folder per "
        f"class (n01440764/, ... as torchvision's ImageFolder expects), or point --data-dir "
        f"(or {DATA_DIR_VARIABLE}) at the folder that holds imagenet/val/.")


def _imagenet_images(params: dict):
    from torchvision import datasets, transforms

    size = params["image_size"]
    transform = transforms.Compose([transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size),
                                    transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    try:
        return datasets.ImageFolder(str(imagenet_folder()), transform=transform)
    except (FileNotFoundError, OSError) as error:
        raise DatasetError(f"ImageNet folder {imagenet_folder()} is not an ImageFolder: {error}") from None


def check_imagenet(layers: dict) -> None:
    """Preflight: models come with weights (there is no training split), the folder has classes
    with images, and one image decodes."""
    model = layers.get("model", {})
    if model.get("epochs") and not model.get("weights"):
        raise DatasetError("imagenet provides only validation images, so models cannot be trained on it: "
                           "set model.weights (a checkpoint per {architecture}, or 'torchvision' for "
                           "pretrained weights, or --weights) and model.epochs: 0")
    images = _imagenet_images(layers["dataset"])
    try:
        images[0]
    except Exception as error:  # noqa: BLE001  (PIL raises many kinds)
        raise DatasetError(f"cannot read {images.samples[0][0]}: {error}") from None


@DATASETS.register(
    "imagenet", preflight=check_imagenet,
    image_size=Param(int, default=224, low=32, high=512, help="centre-crop side (resized to size*256/224 first)"),
    val_samples=Param(int, default=1000, low=10, high=50000, help="stratified subset used for accuracy"))
def imagenet(params: dict) -> Dataset:
    """ImageNet validation images (ImageFolder layout), centre-cropped and normalised; no training split
    (use pretrained weights: model.weights)."""
    images = _imagenet_images(params)
    labels = np.asarray(images.targets, dtype=np.int64)
    chosen = stratified_subset(labels, params["val_samples"], params["split_seed"])
    try:
        val_x = np.stack([images[i][0].numpy() for i in chosen])
    except Exception as error:  # noqa: BLE001
        raise DatasetError(f"reading ImageNet images from {imagenet_folder()} failed: {error}") from None
    size = params["image_size"]
    return Dataset("imagenet", np.zeros((0, 3, size, size), np.float32), np.zeros(0, np.int64),
                   val_x, labels[chosen], len(images.classes))


CLASSES = {"digits": 10, "cifar10": 10, "imagenet": 1000}
"""Classes of each dataset, known without reading it (ImageNet: the full 1,000)."""
NATIVE_SIDE = {"cifar10": 32}
"""Image side of datasets without an ``image_size`` parameter."""


def input_geometry(params: dict) -> tuple[int, int]:
    """(image side, classes) of the dataset ``params`` describe, without reading its files."""
    name = params["name"]
    size_param = DATASETS.get(name).params.get("image_size")
    side = params.get("image_size") or (size_param.default if size_param else NATIVE_SIDE[name])
    return int(side), CLASSES[name]


def load_dataset(params: dict) -> Dataset:
    """Load the dataset named by ``params["name"]`` with its parameters."""
    return DATASETS.get(params["name"]).function(params)
