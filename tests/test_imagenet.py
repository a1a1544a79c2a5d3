"""The paper's ImageNet half with honest splits: weights instead of training, fine-tuning and int8
calibration on train/ only (recorded), accuracy on val/, and preflight saying what is missing."""

from __future__ import annotations

import hashlib

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from dlas_dse.cache import ArtifactCache
from dlas_dse.config import load_space, load_study
from dlas_dse.registry import PreflightError
from dlas_dse.stack.compression import compress
from dlas_dse.stack.datasets import DatasetError, check_imagenet, load_dataset
from dlas_dse.stack.models import build_model
from dlas_dse.study.loop import preflight
from dlas_dse.study.opening import open_storage

CLASSES = ("n01440764", "n01443537", "n01484850")
SIDE = 72  # above the CIFAR-stem threshold: the ImageNet architecture, small enough to compile quickly
IMAGENET = {"name": "imagenet", "image_size": SIDE, "val_samples": 12, "train_samples": 6, "split_seed": 0}
MODEL = {"architecture": "mobilenet_v2", "epochs": 0, "learning_rate": 0.05, "batch_size": 4, "seed": 0,
         "weights": "start.pt", "augmentation": "auto", "schedule": "one-cycle", "weight_decay": 5e-4}


def write_imagenet(root, splits=("val", "train"), per_class: int = 4) -> None:
    """An ImageFolder tree of JPEGs, each class its own tint, under ``root``/imagenet/<split>/."""
    rng = np.random.default_rng(0)
    for split in splits:
        for label, wnid in enumerate(CLASSES):
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 128, size=(90, 120, 3)) + np.eye(3, dtype=np.int64)[label] * 120
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{split}_{wnid}_{i}.JPEG", format="JPEG")


@pytest.fixture
def imagenet_root(tmp_path, monkeypatch):
    write_imagenet(tmp_path)
    monkeypatch.setenv("DLAS_DATA_DIR", str(tmp_path))
    return tmp_path


def test_train_folder_gives_a_stratified_training_subset_apart_from_val(imagenet_root):
    dataset = load_dataset(IMAGENET)
    assert dataset.train_x.shape == (6, 3, SIDE, SIDE) and sorted(np.bincount(dataset.train_y)) == [2, 2, 2]
    assert dataset.val_x.shape == (12, 3, SIDE, SIDE) and dataset.num_classes == 3
    assert not any(np.array_equal(t, v) for t in dataset.train_x for v in dataset.val_x)
    assert load_dataset({**IMAGENET, "train_samples": 0}).train_x.shape == (0, 3, SIDE, SIDE)


def test_preflight_names_what_needs_training_images(tmp_path, monkeypatch):
    write_imagenet(tmp_path, splits=("val",))
    monkeypatch.setenv("DLAS_DATA_DIR", str(tmp_path))
    layers = {"dataset": IMAGENET, "model": MODEL, "compression": {"technique": "none"}}
    check_imagenet(layers)  # pretrained weights used as they are: val/ is enough
    cases = {"int8": ({"technique": "int8", "calibration_images": 512}, "compression int8 calibrates on 512 of them"),
             "weight_pruning": ({"technique": "weight_pruning", "finetune_epochs": 2},
                                "compression weight_pruning fine-tunes for 2 epochs on them")}
    for compression, reason in cases.values():
        with pytest.raises(DatasetError) as caught:
            check_imagenet({**layers, "compression": compression})
        assert reason in str(caught.value) and str(tmp_path / "imagenet" / "train") in str(caught.value)
        assert "never the validation images" in str(caught.value)
    check_imagenet({**layers, "compression": {"technique": "weight_pruning", "finetune_epochs": 0}})
    with pytest.raises(DatasetError, match="model.epochs 1 fine-tunes the weights"):
        check_imagenet({**layers, "model": {**MODEL, "epochs": 1}})
    with pytest.raises(DatasetError, match="not trained from scratch"):
        check_imagenet({**layers, "model": {**MODEL, "epochs": 1, "weights": ""}})
    # a study's preflight checks every (dataset, model, compression) combination, not one per layer
    torch.save(build_model(MODEL, load_dataset(IMAGENET)).state_dict(), tmp_path / "start.pt")
    space = load_space(str(_space(tmp_path, f"{tmp_path / 'start.pt'}", "{choices: [none, int8]}")))
    with pytest.raises(PreflightError, match="compression int8 calibrates"):
        preflight(space)
    write_imagenet(tmp_path, splits=("train",))
    preflight(space)


def test_int8_calibrates_on_training_images_only_and_records_which(imagenet_root):
    dataset = load_dataset(IMAGENET)
    model = build_model(MODEL, dataset).eval()
    params = {"technique": "int8", "calibration_images": 3}
    compressed = compress(model, dataset, params, MODEL, "start", ArtifactCache(imagenet_root / "cache"))
    record = compressed.record
    assert record["calibration_split"] == "train" and record["calibration_samples"] == 3
    used = dataset.calibration_images(3)
    assert record["calibration_digest"] == hashlib.sha256(used.tobytes()).hexdigest()[:16]
    assert any(np.array_equal(image, t) for image in used for t in dataset.train_x)
    assert not any(np.array_equal(image, v) for image in used for v in dataset.val_x)
    assert np.array_equal(compressed.calibration_images, used)  # what a compiler that calibrates itself gets
    without_train = load_dataset({**IMAGENET, "train_samples": 0})
    with pytest.raises(DatasetError, match="no training images to calibrate on"):
        compress(model, without_train, params, MODEL, "start", ArtifactCache(imagenet_root / "other"))


def test_pruning_fine_tunes_on_train(imagenet_root):
    dataset = load_dataset(IMAGENET)
    model = build_model(MODEL, dataset).eval()
    params = {"technique": "weight_pruning", "sparsity": 0.5, "max_layer_sparsity": 0.95,
              "finetune_epochs": 1, "finetune_learning_rate": 0.01}
    record = compress(model, dataset, params, MODEL, "start", ArtifactCache(imagenet_root / "cache")).record
    assert record["finetune_epochs"] == 1 and record["finetune_train_loss"] > 0
    assert 0 <= record["finetune_train_accuracy"] <= 1 and record["sparsity"] == pytest.approx(0.5, abs=0.01)


def _space(root, weights: str, techniques: str, epochs: int = 0):
    path = root / "search_spaces" / "imagenet-tiny.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"""\
dataset:
  name: imagenet
  image_size: {SIDE}
  val_samples: 12
  train_samples: 6
model:
  architecture: mobilenet_v2
  epochs: {epochs}
  batch_size: 4
  weights: {weights}
compression:
  technique: {techniques}
  calibration_images: 6
software:
  compiler: tvm
  tuning: untuned
hardware:
  device: host-cpu
  threads: 1
""")
    return path


@pytest.mark.slow
def test_grid_with_weights_per_dataset_runs_imagenet_end_to_end(project, monkeypatch):
    write_imagenet(project.root)
    monkeypatch.setenv("DLAS_DATA_DIR", str(project.root))
    checkpoint = project.root / "mobilenet_v2-imagenet.pt"
    torch.save(build_model(MODEL, load_dataset(IMAGENET)).state_dict(), checkpoint)
    _space(project.root, "''", "{choices: [none, int8]}", epochs=1)  # fine-tunes on train/
    project.write("studies", "imagenet-tiny", "space: imagenet-tiny\nsampler: grid\nn_trials: 2\nseed: 0\n"
                  "evaluation: {batch_size: 12, max_samples: 12}\n"
                  "measurement: {warmup_runs: 1, min_repeats: 3, min_time_s: 0.1}\n")
    without = project.run("grid", "--study", "imagenet-tiny", "--no-progress", "--data-dir", str(project.root))
    assert without.returncode == 2 and "imagenet models are not trained from scratch" in without.stderr
    result = project.run("grid", "--study", "imagenet-tiny", "--no-progress", "--no-remeasure", "--data-dir",
                         str(project.root), "--weights", f"imagenet={project.root}/{{architecture}}-{{dataset}}.pt")
    assert result.returncode == 0, result.stderr
    monkeypatch.chdir(project.root)
    study = optuna.load_study(study_name="imagenet-tiny", storage=open_storage(load_study("imagenet-tiny").storage))
    trials = {t.params.get("compression.technique", t.user_attrs["config"]["compression.technique"]): t
              for t in study.get_trials()}
    assert set(trials) == {"none", "int8"} and all(t.state.name == "COMPLETE" for t in trials.values())
    for trial in trials.values():
        assert trial.user_attrs["training"]["weights"] == str(checkpoint)
        assert trial.user_attrs["training"]["train_loss"] > 0  # fine-tuned for the space's one epoch
        assert trial.user_attrs["dataset_sizes"] == {"train": 6, "validation": 12}
        assert 0 <= trial.values[0] <= 1  # accuracy on the twelve val/ images
    assert trials["int8"].user_attrs["compression"]["calibration_split"] == "train"

