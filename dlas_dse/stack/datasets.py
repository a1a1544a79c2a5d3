"""Layer 1, datasets: train/validation splits as normalised NCHW float32 arrays.

``digits`` is bundled with scikit-learn. ``cifar10`` and ``imagenet`` are read from the data
directory: ``--data-dir`` or the ``DLAS_DATA_DIR`` environment variable (default ``./data``).
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlas_dse.lazy import lazy_import
from dlas_dse.registry import COMPRESSIONS, DATASETS, Param, PreflightError

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

    def calibration_images(self, count: int) -> np.ndarray:
        """A class-stratified subset of ``count`` training images (never validation images): what
        post-training quantisation calibrates on. Raises where the dataset has no training images."""
        if not len(self.train_y):
            raise DatasetError(f"{self.name} has no training images to calibrate on, and the validation images "
                               "accuracy is measured on must not be used; give it some (ImageNet: a train/ folder)")
        return self.train_x[stratified_subset(self.train_y, count, seed=0)]

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
    "digits", traits={"augmentation": "none"},
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
    "cifar10", preflight=check_cifar10, traits={"augmentation": "crop-flip"},
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

def imagenet_folder(split: str = "val") -> Path | None:
    """The ImageFolder directory of ImageNet's ``split`` (val or train): one sub-folder of images
    per class; None when there is none."""
    root = data_directory()
    for folder in (root / "imagenet" / split, root / split):
        if folder.is_dir() and any(child.is_dir() for child in folder.iterdir()):
            return folder
    return None


def _missing_imagenet(split: str, why: str) -> DatasetError:
    root = data_directory()
    return DatasetError(
        f"ImageNet {why}: looked for class folders in {root / 'imagenet' / split}, {root / split}. Put the "
        f"ILSVRC2012 {'validation set' if split == 'val' else 'training images (a few per class suffice)'} there "
        f"as one folder per class (n01440764/, ... as torchvision's ImageFolder expects), or point --data-dir "
        f"(or {DATA_DIR_VARIABLE}) at the folder that holds imagenet/{split}/.")


@functools.lru_cache(maxsize=8)
def _imagenet_images(folder: Path, size: int):
    """The ImageFolder of ``folder`` (scanned once per process), centre-cropped to ``size``."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size),
                                    transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    try:
        return datasets.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, OSError) as error:
        raise DatasetError(f"ImageNet folder {folder} is not an ImageFolder: {error}") from None


def _imagenet_split(params: dict, split: str):
    folder = imagenet_folder(split)
    if folder is None:
        raise _missing_imagenet(split, "validation images not found" if split == "val" else
                                "training images not found")
    return _imagenet_images(folder, params["image_size"])


def training_needs(layers: dict) -> list[str]:
    """What in this configuration uses training images (empty: nothing does): training or
    fine-tuning the model, and compressions that calibrate or fine-tune (their ``training_images`` trait)."""
    needs = []
    model, compression = layers.get("model", {}), layers.get("compression", {})
    if model.get("epochs"):
        needs.append(f"model.epochs {model['epochs']} {'fine-tunes the weights' if model.get('weights') else 'trains'}")
    technique = compression.get("technique")
    uses = COMPRESSIONS.trait(technique, "training_images") if technique else None
    if uses and uses(compression):
        needs.append(f"compression {technique} {uses(compression)}")
    return needs


def check_imagenet(layers: dict) -> None:
    """Preflight: models come with weights (ImageNet is not trained from scratch here), the val/
    folder has classes with images and one decodes, and where the trial uses training images
    (fine-tuning, calibration) a train/ folder with the same classes holds them."""
    model = layers.get("model", {})
    if model.get("epochs") and not model.get("weights"):
        raise DatasetError("imagenet models are not trained from scratch here: set model.weights (a checkpoint "
                           "per {architecture}, or 'torchvision' for pretrained weights, or --weights) and "
                           "model.epochs: 0 to use them as they are (or a few epochs to fine-tune on train/)")
    images = _imagenet_split(layers["dataset"], "val")
    try:
        images[0]
    except Exception as error:  # noqa: BLE001  (PIL raises many kinds)
        raise DatasetError(f"cannot read {images.samples[0][0]}: {error}") from None
    needs = training_needs(layers)
    if needs and imagenet_folder("train") is None:
        raise _missing_imagenet("train", f"training images are needed ({'; '.join(needs)}) - never the "
                                "validation images accuracy is measured on - but none were found")
    if needs and _imagenet_split(layers["dataset"], "train").classes != images.classes:
        raise DatasetError(f"ImageNet train/ and val/ hold different class folders ({imagenet_folder('train')}, "
                           f"{imagenet_folder('val')}); both need the same classes")


def _read_imagenet(images, chosen: np.ndarray, size: int) -> np.ndarray:
    if not len(chosen):
        return np.zeros((0, 3, size, size), np.float32)
    try:
        return np.stack([images[i][0].numpy() for i in chosen])
    except Exception as error:  # noqa: BLE001
        raise DatasetError(f"reading ImageNet images from {images.root} failed: {error}") from None


@DATASETS.register(
    "imagenet", preflight=check_imagenet, traits={"augmentation": "crop-flip"},
    image_size=Param(int, default=224, low=32, high=512, help="centre-crop side (resized to size*256/224 first)"),
    val_samples=Param(int, default=1000, low=10, high=50000, help="stratified subset used for accuracy"),
    train_samples=Param(int, default=1000, low=0, high=1281167,
                        help="stratified subset of train/ for fine-tuning and int8 calibration (a few per class)"))
def imagenet(params: dict) -> Dataset:
    """ImageNet in the ImageFolder layout: val/ centre-cropped and normalised for accuracy, and where
    there is a train/ folder a stratified subset of it for fine-tuning and calibration."""
    val = _imagenet_split(params, "val")
    val_labels = np.asarray(val.targets, dtype=np.int64)
    val_index = stratified_subset(val_labels, params["val_samples"], params["split_seed"])
    size = params["image_size"]
    train_x, train_y = np.zeros((0, 3, size, size), np.float32), np.zeros(0, np.int64)
    if imagenet_folder("train") is not None and params.get("train_samples", 0):
        train = _imagenet_split(params, "train")
        labels = np.asarray(train.targets, dtype=np.int64)
        index = stratified_subset(labels, params["train_samples"], params["split_seed"])
        train_x, train_y = _read_imagenet(train, index, size), labels[index]
    return Dataset("imagenet", train_x, train_y, _read_imagenet(val, val_index, size),
                   val_labels[val_index], len(val.classes))


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
