"""The paper's seven architectures compile with TVM and match PyTorch; checkpoints are reused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from dlas_dse.cache import ArtifactCache
from dlas_dse.registry import MODELS, PreflightError
from dlas_dse.stack.compilers import BuildRequest, compile_model
from dlas_dse.stack.datasets import Dataset, load_dataset
from dlas_dse.stack.devices import create_device
from dlas_dse.stack.models import (LR_SCHEDULES, augmentation, build_model, check_weights, crop_flip, load_weights,
                                   pretrained_file, trained_model)
from dlas_dse.trial import check_against_pytorch

DIGITS = {"name": "digits", "image_size": 32, "val_fraction": 0.2, "split_seed": 0}
PAPER_MODELS = ["resnet18", "resnet50", "mobilenet_v2", "vgg16_bn", "densenet121", "efficientnet_b0",
                "mnasnet1_0"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DIGITS)


@pytest.fixture(scope="module")
def few_digits(digits):
    """256 of the training images: enough to tell trainings apart, quick to train on."""
    return Dataset("digits", digits.train_x[:256], digits.train_y[:256], digits.val_x, digits.val_y, 10)


FEW = {**DIGITS, "train_subset": 256}  # the key of few_digits' trainings


def test_the_seven_paper_models_are_registered():
    assert set(PAPER_MODELS) <= set(MODELS.names())


@pytest.mark.slow
@pytest.mark.parametrize("architecture", PAPER_MODELS)
def test_model_adapted_to_32px_compiles_and_matches_pytorch(architecture, digits, tmp_path):
    model = build_model({"architecture": architecture, "seed": 0}, digits).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(digits.val_x[:2]))
    assert logits.shape == (2, 10)
    device = create_device({"device": "host-cpu", "threads": 2})
    request = BuildRequest(model=model, model_key={"test": architecture}, image_shape=digits.image_shape,
                           batch_size=1, algorithm={"conv": "direct"},
                           software={"compiler": "tvm", "tuning": "untuned"}, device=device)
    build = compile_model(request, ArtifactCache(tmp_path))
    check = check_against_pytorch(build.executable, model, digits.val_x[:1], tolerance=1e-3)
    assert check["top1_agreement"] == 1.0
    assert build.macs > 0 and build.deployed_bytes > 0


def test_second_run_hits_the_checkpoint_cache(digits, tmp_path):
    params = {"architecture": "mobilenet_v2", "epochs": 0, "learning_rate": 0.05, "batch_size": 64,
              "seed": 3, "weights": ""}
    cache = ArtifactCache(tmp_path)
    first, record1 = trained_model(params, digits, DIGITS, cache)
    second, record2 = trained_model(params, digits, DIGITS, cache)
    assert (record1["hit"], record2["hit"]) == (False, True)
    assert record1["checkpoint"] == record2["checkpoint"]
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    other, record3 = trained_model({**params, "seed": 4}, digits, DIGITS, cache)
    assert record3["checkpoint"] != record1["checkpoint"]


def test_user_weights_with_no_epochs_are_used_as_they_are(digits, tmp_path):
    source = build_model({"architecture": "mobilenet_v2", "seed": 7}, digits)
    path = tmp_path / "mobilenet_v2-digits.pt"
    torch.save(source.state_dict(), path)
    params = {"architecture": "mobilenet_v2", "epochs": 0, "learning_rate": 0.05, "batch_size": 64,
              "seed": 0, "weights": str(tmp_path / "{architecture}-{dataset}.pt")}
    check_weights({"model": params, "dataset": DIGITS})
    model, record = trained_model(params, digits, DIGITS, ArtifactCache(tmp_path / "cache"))
    assert record["weights"] == str(path) and record["checkpoint"].startswith("weights-")
    assert not (tmp_path / "cache" / "train").exists()  # nothing trained
    x = torch.from_numpy(digits.val_x[:2])
    with torch.no_grad():
        assert np.allclose(model(x).numpy(), source.eval()(x).numpy())


def test_weights_that_do_not_fit_or_do_not_exist(digits, tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(build_model({"architecture": "resnet18", "seed": 0}, digits).state_dict(), path)
    params = {"architecture": "mobilenet_v2", "epochs": 0, "learning_rate": 0.05, "batch_size": 64,
              "seed": 0, "weights": str(path)}
    with pytest.raises(PreflightError, match="do not fit mobilenet_v2 for digits \\(10 classes, 32x32 input\\)"):
        trained_model(params, digits, DIGITS, ArtifactCache(tmp_path / "cache"))
    with pytest.raises(PreflightError, match="does not exist"):
        check_weights({"model": {**params, "weights": str(tmp_path / "missing.pt")}, "dataset": DIGITS})


def test_weights_with_epochs_are_fine_tuned_and_keyed_by_their_contents(few_digits, tmp_path):
    path = tmp_path / "start.pt"
    torch.save(build_model({"architecture": "mobilenet_v2", "seed": 7}, few_digits).state_dict(), path)
    params = {"architecture": "mobilenet_v2", "epochs": 1, "learning_rate": 0.05, "batch_size": 64,
              "seed": 0, "weights": str(path)}
    cache = ArtifactCache(tmp_path / "cache")
    tuned, record = trained_model(params, few_digits, FEW, cache)
    assert record["weights"] == str(path) and not record["hit"] and record["train_seconds"] > 0
    as_is, _ = trained_model({**params, "epochs": 0}, few_digits, FEW, cache)
    changed = [name for name, value in tuned.state_dict().items()
               if value.is_floating_point() and not torch.equal(value, as_is.state_dict()[name])]
    assert len(changed) > 10  # fine-tuning moved the weights it started from
    # other weights in the same file: another training, not the cached one
    torch.save(build_model({"architecture": "mobilenet_v2", "seed": 8}, few_digits).state_dict(), path)
    _, again = trained_model(params, few_digits, FEW, cache)
    assert again["checkpoint"] != record["checkpoint"] and not again["hit"]


def test_torchvision_weights_come_from_the_hub_cache_and_only_fit_imagenet(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    imagenet = {"name": "imagenet", "image_size": 224}
    layers = {"model": {"architecture": "resnet18", "weights": "torchvision"}, "dataset": imagenet}
    path, url = pretrained_file("resnet18")
    assert path.parent == tmp_path / "torch" / "hub" / "checkpoints" and path.name in url
    with pytest.raises(PreflightError, match=f"{path} is missing, and nothing is downloaded here.*curl -L {url}"):
        check_weights(layers)
    with pytest.raises(PreflightError, match="use them for imagenet only"):
        check_weights({**layers, "dataset": DIGITS})
    # a file where torch hub keeps it is loaded without any download (random weights stand in for the real ones)
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    stand_in = torchvision.models.resnet18(num_classes=1000)
    torch.save(stand_in.state_dict(), path)
    check_weights(layers)
    dataset = Dataset("imagenet", np.zeros((0, 3, 224, 224), np.float32), np.zeros(0, np.int64),
                      np.zeros((1, 3, 224, 224), np.float32), np.zeros(1, np.int64), 1000)
    model = build_model({"architecture": "resnet18", "seed": 1}, dataset)
    load_weights(model, "torchvision", {"architecture": "resnet18"}, dataset)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), stand_in.state_dict().values()))


def test_crop_flip_crops_the_padded_image_and_flips_half():
    images = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).reshape(4, 3, 8, 8).repeat(16, 1, 1, 1)
    out = crop_flip(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    seen = set()
    for index in range(len(images)):
        matches = [(dy, dx, flip) for dy in range(3) for dx in range(3) for flip in (False, True)
                   if torch.equal(out[index], (lambda c: c.flip(-1) if flip else c)(padded[index, :, dy:dy + 8, dx:dx + 8]))]
        assert matches, "each output is a crop of the padded image, flipped or not"
        seen.update(matches)
    assert {flip for _, _, flip in seen} == {False, True} and len({(dy, dx) for dy, dx, _ in seen}) > 3


def test_recipe_picks_augmentation_per_dataset_and_is_part_of_the_training_key(digits, few_digits, tmp_path):
    assert augmentation({"augmentation": "auto"}, digits) == "none"  # flipped digits are other digits
    assert augmentation({"augmentation": "auto"}, Dataset("cifar10", *[np.zeros(0)] * 4, 10)) == "crop-flip"
    assert augmentation({"augmentation": "crop-flip"}, digits) == "crop-flip"
    params = {"architecture": "mobilenet_v2", "epochs": 1, "learning_rate": 0.05, "batch_size": 64,
              "seed": 0, "weights": "", "augmentation": "auto", "schedule": "one-cycle", "weight_decay": 5e-4}
    cache = ArtifactCache(tmp_path)
    _, base = trained_model(params, few_digits, FEW, cache)
    _, flipped = trained_model({**params, "augmentation": "crop-flip"}, few_digits, FEW, cache)
    _, constant = trained_model({**params, "schedule": "constant"}, few_digits, FEW, cache)
    assert len({base["checkpoint"], flipped["checkpoint"], constant["checkpoint"]}) == 3
    assert len({base["train_loss"], flipped["train_loss"], constant["train_loss"]}) == 3


def test_schedules_shape_the_learning_rate():
    def rates(schedule: str) -> list[float]:
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        scheduler = LR_SCHEDULES[schedule](optimizer, 0.1, 100)
        seen = []
        for _ in range(100):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return seen

    one_cycle, cosine, constant = rates("one-cycle"), rates("cosine"), rates("constant")
    assert one_cycle[0] < 0.01 and max(one_cycle) == pytest.approx(0.1, rel=1e-3) and one_cycle[-1] < 1e-3  # warm-up
    assert cosine[0] == 0.1 and all(a >= b for a, b in zip(cosine, cosine[1:])) and cosine[-1] < 1e-3
    assert constant == [0.1] * 100
