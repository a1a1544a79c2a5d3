"""The paper's seven architectures compile with TVM and match PyTorch; checkpoints are reused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlas_dse.cache import ArtifactCache
from dlas_dse.registry import MODELS, PreflightError
from dlas_dse.stack.compilers import BuildRequest, compile_model
from dlas_dse.stack.datasets import load_dataset
from dlas_dse.stack.devices import create_device
from dlas_dse.stack.models import build_model, check_weights, trained_model
from dlas_dse.trial import check_against_pytorch

DIGITS = {"name": "digits", "image_size": 32, "val_fraction": 0.2, "split_seed": 0}
PAPER_MODELS = ["resnet18", "resnet50", "mobilenet_v2", "vgg16_bn", "densenet121", "efficientnet_b0",
                "mnasnet1_0"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DIGITS)


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


def test_user_weights_replace_training(digits, tmp_path):
    source = build_model({"architecture": "mobilenet_v2", "seed": 7}, digits)
    path = tmp_path / "mobilenet_v2-digits.pt"
    torch.save(source.state_dict(), path)
    params = {"architecture": "mobilenet_v2", "epochs": 5, "learning_rate": 0.05, "batch_size": 64,
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
