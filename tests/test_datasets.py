"""Dataset loaders read the real on-disk formats and explain missing or corrupt data."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from dlas_dse.stack.datasets import (CIFAR10_FOLDER, CIFAR10_TRAIN_FILES, DatasetError, check_cifar10,
                                     check_imagenet, load_dataset, read_cifar10_batch)


def _write_cifar_batch(path, count: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """A batch in CIFAR-10's python format: a pickled dict of bytes keys, rows of 3072 uint8."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    labels = [int(i % 10) for i in range(count)]
    with open(path, "wb") as handle:
        pickle.dump({b"batch_label": b"testing batch", b"labels": labels, b"data": data,
                     b"filenames": [f"{i}.png".encode() for i in range(count)]}, handle)
    return data, labels


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    folder = tmp_path / CIFAR10_FOLDER
    folder.mkdir()
    for index, name in enumerate(CIFAR10_TRAIN_FILES):
        _write_cifar_batch(folder / name, 20, index)
    _write_cifar_batch(folder / "test_batch", 30, 99)
    monkeypatch.setenv("DLAS_DATA_DIR", str(tmp_path))
    return folder


def test_cifar10_reads_the_pickle_batches(cifar_dir):
    dataset = load_dataset({"name": "cifar10", "download": False, "train_samples": 50000,
                            "val_samples": 20, "split_seed": 0})
    assert dataset.train_x.shape == (100, 3, 32, 32) and dataset.train_x.dtype == np.float32
    assert dataset.val_x.shape == (20, 3, 32, 32) and sorted(set(dataset.val_y)) == list(range(10))
    assert dataset.num_classes == 10
    # pixel (channel 0, row 0, col 0) of the first test image, normalised with CIFAR's statistics
    data, labels = read_cifar10_batch(cifar_dir / "test_batch")
    raw = pickle.load(open(cifar_dir / "test_batch", "rb"), encoding="bytes")
    assert data[0, 0, 0, 0] == raw[b"data"][0, 0] and data[0, 2, 31, 31] == raw[b"data"][0, 3071]
    assert list(labels) == raw[b"labels"]


def test_cifar10_missing_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("DLAS_DATA_DIR", str(tmp_path / "nothing"))
    with pytest.raises(DatasetError) as caught:
        check_cifar10({"dataset": {"name": "cifar10", "download": False}})
    message = str(caught.value)
    assert str(tmp_path / "nothing" / CIFAR10_FOLDER) in message
    assert "cifar-10-python.tar.gz" in message and "--data-dir" in message and "download: true" in message


def test_cifar10_corrupt_batch_is_named(cifar_dir):
    (cifar_dir / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="test_batch is not a readable CIFAR-10 batch"):
        check_cifar10({"dataset": {"name": "cifar10", "download": False}})


@pytest.fixture
def imagenet_dir(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for wnid in ("n01440764", "n01443537", "n01484850"):
        folder = tmp_path / "imagenet" / "val" / wnid
        folder.mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"ILSVRC2012_val_{wnid}_{i}.JPEG", format="JPEG")
    monkeypatch.setenv("DLAS_DATA_DIR", str(tmp_path))
    return tmp_path / "imagenet" / "val"


def test_imagenet_centre_crops_and_normalises(imagenet_dir):
    dataset = load_dataset({"name": "imagenet", "image_size": 224, "val_samples": 6, "split_seed": 0})
    assert dataset.val_x.shape == (6, 3, 224, 224) and dataset.num_classes == 3
    assert sorted(np.bincount(dataset.val_y)) == [2, 2, 2]  # stratified subset
    assert len(dataset.train_y) == 0
    assert -3 < dataset.val_x.mean() < 3 and dataset.val_x.std() > 0.5  # normalised, not raw pixels


def test_imagenet_needs_weights_not_training(imagenet_dir):
    layers = {"dataset": {"name": "imagenet", "image_size": 224, "val_samples": 6, "split_seed": 0},
              "model": {"architecture": "resnet18", "epochs": 2, "weights": ""}}
    with pytest.raises(DatasetError, match="set model.weights"):
        check_imagenet(layers)
    check_imagenet({**layers, "model": {"architecture": "resnet18", "epochs": 0, "weights": "torchvision"}})


def test_imagenet_missing_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("DLAS_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match="ImageNet validation images not found: looked for class folders in"):
        load_dataset({"name": "imagenet", "image_size": 224, "val_samples": 6, "split_seed": 0})


def test_study_with_missing_data_stops_before_any_work(project):
    project.write("search_spaces", "c", "dataset: {name: cifar10}\nmodel: {architecture: resnet18}\n")
    project.write("studies", "c", "space: c\n")
    result = project.run("optimize", "--study", "c", "--data-dir", str(project.root / "empty"))
    assert result.returncode == 2
    assert "CIFAR-10 not found" in result.stderr and str(project.root / "empty") in result.stderr
    assert not (project.root / "results").exists()  # no storage written
