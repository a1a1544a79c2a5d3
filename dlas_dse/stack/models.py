"""Layer 2, models: torchvision architectures adapted to the dataset, trained and cached."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import time
import urllib.parse
from pathlib import Path

from dlas_dse.cache import ArtifactCache, code_fingerprint
from dlas_dse.lazy import lazy_import
from dlas_dse.registry import DATASETS, MODELS, PreflightError
from dlas_dse.stack.datasets import Dataset, input_geometry

torch = lazy_import("torch")
nn = lazy_import("torch.nn")
torchvision = lazy_import("torchvision")

SMALL_INPUT = 64
"""Inputs up to this side get the CIFAR-style stem (no early downsampling)."""
PRETRAINED = "torchvision"
"""model.weights value for torchvision's pretrained ImageNet weights."""
IMAGENET_CLASSES = 1000


def _resnet(model: nn.Module, image_size: int) -> nn.Module:
    """For small inputs a 3x3 stride-1 stem and no max-pool (the usual CIFAR stem)."""
    if image_size <= SMALL_INPUT:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def _stride_one_stem(model: nn.Module, stem: nn.Conv2d, image_size: int) -> nn.Module:
    """For small inputs the ``stem`` convolution has stride 1 (no early downsampling)."""
    if image_size <= SMALL_INPUT:
        stem.stride = (1, 1)
    return model


@MODELS.register("resnet18")
def resnet18(num_classes: int, image_size: int) -> nn.Module:
    """ResNet-18; CIFAR stem for small inputs."""
    return _resnet(torchvision.models.resnet18(num_classes=num_classes), image_size)


@MODELS.register("resnet50")
def resnet50(num_classes: int, image_size: int) -> nn.Module:
    """ResNet-50 (bottleneck blocks); CIFAR stem for small inputs."""
    return _resnet(torchvision.models.resnet50(num_classes=num_classes), image_size)


@MODELS.register("mobilenet_v2")
def mobilenet_v2(num_classes: int, image_size: int) -> nn.Module:
    """MobileNetV2; for small inputs the stem convolution has stride 1."""
    model = torchvision.models.mobilenet_v2(num_classes=num_classes)
    return _stride_one_stem(model, model.features[0][0], image_size)


@MODELS.register("vgg16_bn")
def vgg16_bn(num_classes: int, image_size: int) -> nn.Module:
    """VGG-16 with BatchNorm; for small inputs global pooling and one linear classifier (CIFAR VGG)."""
    model = torchvision.models.vgg16_bn(num_classes=num_classes)
    if image_size <= SMALL_INPUT:
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Linear(512, num_classes)
    return model


@MODELS.register("densenet121")
def densenet121(num_classes: int, image_size: int) -> nn.Module:
    """DenseNet-121; for small inputs a 3x3 stride-1 stem and no max-pool."""
    model = torchvision.models.densenet121(num_classes=num_classes)
    if image_size <= SMALL_INPUT:
        model.features.conv0 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.features.pool0 = nn.Identity()
    return model


@MODELS.register("efficientnet_b0")
def efficientnet_b0(num_classes: int, image_size: int) -> nn.Module:
    """EfficientNet-B0; for small inputs the stem convolution has stride 1."""
    model = torchvision.models.efficientnet_b0(num_classes=num_classes)
    return _stride_one_stem(model, model.features[0][0], image_size)


@MODELS.register("mnasnet1_0")
def mnasnet1_0(num_classes: int, image_size: int) -> nn.Module:
    """MnasNet 1.0; for small inputs the stem convolution has stride 1."""
    model = torchvision.models.mnasnet1_0(num_classes=num_classes)
    return _stride_one_stem(model, model.layers[0], image_size)


def build_model(params: dict, dataset: Dataset) -> nn.Module:
    """An untrained model of ``params["architecture"]`` for ``dataset``'s images and classes."""
    torch.manual_seed(params["seed"])
    return MODELS.get(params["architecture"]).function(dataset.num_classes, dataset.image_shape[-1])


def training_device() -> torch.device:
    """The GPU when one is present, else the CPU with all its cores."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(os.cpu_count() or 1)
    return torch.device("cpu")


def crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image randomly cropped back to its size from a copy zero-padded by 1/8 of its side,
    and flipped left-right with probability 1/2 (the usual CIFAR-10 augmentation)."""
    n, channels, height, width = images.shape
    pad = max(1, height // 8)
    padded = nn.functional.pad(images, (pad, pad, pad, pad))
    rows = torch.arange(height) + torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    cols = torch.arange(width) + torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(channels)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


AUGMENTATIONS = {"none": lambda images, generator: images, "crop-flip": crop_flip}
"""model.augmentation: how a training batch is transformed before each step."""


def augmentation(params: dict, dataset: Dataset) -> str:
    """The augmentation a training run uses: the model's, or for ``auto`` the one the dataset declares."""
    if params.get("augmentation", "auto") != "auto":
        return params["augmentation"]
    return DATASETS.trait(dataset.name, "augmentation", "none")


LR_SCHEDULES = {
    "one-cycle": lambda optimizer, lr, steps: torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps),
    "cosine": lambda optimizer, lr, steps: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps),
    "constant": lambda optimizer, lr, steps: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
}
"""model.schedule: the learning rate over the run's ``steps`` optimiser steps."""


def train(model: nn.Module, dataset: Dataset, params: dict) -> dict:
    """SGD with Nesterov momentum, weight decay, the configured schedule and augmentation, on the
    GPU when there is one; returns the final epoch's loss and accuracy."""
    if params["epochs"] and not len(dataset.train_y):
        raise ValueError(f"dataset {dataset.name} has no training images to train on; give it some (ImageNet: "
                         "a train/ folder beside val/) or set model.epochs: 0 with model.weights")
    device = training_device()
    model.to(device).train()
    generator = torch.Generator().manual_seed(params["seed"])
    x, y = torch.from_numpy(dataset.train_x), torch.from_numpy(dataset.train_y)
    augment = AUGMENTATIONS[augmentation(params, dataset)]
    steps_per_epoch = max(1, -(-len(y) // params["batch_size"]))
    optimizer = torch.optim.SGD(model.parameters(), lr=params["learning_rate"], momentum=0.9,
                                weight_decay=params.get("weight_decay", 5e-4), nesterov=True)
    scheduler = LR_SCHEDULES[params.get("schedule", "one-cycle")](
        optimizer, params["learning_rate"], max(1, params["epochs"] * steps_per_epoch))
    stats = {"epochs": params["epochs"], "train_loss": None, "train_accuracy": None}
    for _ in range(params["epochs"]):
        order = torch.randperm(len(y), generator=generator)
        loss_sum, correct = 0.0, 0
        for start in range(0, len(y), params["batch_size"]):
            index = order[start:start + params["batch_size"]]
            inputs, labels = augment(x[index], generator).to(device), y[index].to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(inputs)
            loss = nn.functional.cross_entropy(logits, labels)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(index)
            correct += int((logits.argmax(1) == labels).sum())
        stats.update(train_loss=loss_sum / len(y), train_accuracy=correct / len(y))
    if len(y):
        recalibrate_batchnorm(model, x, params["batch_size"], device)
    model.cpu().eval()
    return stats


def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int,
                          device: torch.device) -> None:
    """Recompute BatchNorm running statistics of the final weights over the training images.

    After a short schedule the running averages lag far behind the weights; exact statistics
    make the eval-mode model (the one that is deployed) match what training achieved.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the pass
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size].to(device))
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def trained_model(params: dict, dataset: Dataset, dataset_params: dict,
                  cache: ArtifactCache) -> tuple[nn.Module, dict]:
    """The model for (dataset, architecture, recipe, seed, weights), from the cache when possible:
    trained from scratch, fine-tuned from ``model.weights`` (``epochs`` > 0), or those weights as
    they are (``epochs`` 0).

    Returns the model in eval mode on the CPU and a record with the checkpoint key, cache hit,
    training time, final training statistics and the weights started from.
    """
    source = weights_source(params, dataset_params)
    started_from = {"weights": source} if source else {}
    if source and not params["epochs"]:
        model = build_model(params, dataset)
        load_weights(model, source, params, dataset)
        return model.eval(), {"checkpoint": f"weights-{_digest(source)}", "hit": True, **started_from}
    inputs = {"dataset": dataset_params, "model": {**params, "weights": _digest(source) if source else ""},
              "torch": torch.__version__,
              "code": code_fingerprint(sys.modules[__name__], sys.modules[Dataset.__module__])}

    def create(directory: Path) -> dict:
        model = build_model(params, dataset)
        if source:
            load_weights(model, source, params, dataset)
        started = time.perf_counter()
        stats = train(model, dataset, params)
        stats["train_seconds"] = time.perf_counter() - started
        torch.save(model.state_dict(), directory / "checkpoint.pt")
        return stats

    directory, hit = cache.get_or_create("train", inputs, create)
    model = build_model(params, dataset)
    model.load_state_dict(torch.load(directory / "checkpoint.pt", weights_only=True, map_location="cpu"))
    metadata = json.loads((directory / "meta.json").read_text())
    return model.eval(), {"checkpoint": directory.name, "hit": hit, **started_from, **{
        k: metadata.get(k) for k in ("train_seconds", "train_loss", "train_accuracy")}}


def weights_source(params: dict, dataset_params: dict) -> str:
    """The user's checkpoint for this model ('' to train from scratch): model.weights with
    {architecture} and {dataset} replaced."""
    try:
        return params.get("weights", "").format(architecture=params["architecture"], dataset=dataset_params["name"])
    except (KeyError, IndexError, ValueError) as error:
        raise PreflightError(f"model.weights {params['weights']!r}: only {{architecture}} and {{dataset}} "
                             f"may be replaced ({error})") from None


def pretrained_file(architecture: str) -> tuple[Path, str]:
    """Where torch hub keeps torchvision's pretrained ImageNet weights of ``architecture``, and their URL."""
    url = torchvision.models.get_model_weights(architecture).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name, url


def check_weights(layers: dict) -> None:
    """Preflight of model.weights: a named checkpoint file exists; torchvision's pretrained weights
    are in the torch hub cache (nothing is downloaded) and fit the dataset's classes and input."""
    architecture = layers["model"]["architecture"]
    source = weights_source(layers["model"], layers["dataset"])
    if source == PRETRAINED:
        side, classes = input_geometry(layers["dataset"])
        if classes != IMAGENET_CLASSES or side <= SMALL_INPUT:
            raise PreflightError(f"model.weights {PRETRAINED}: torchvision's pretrained {architecture} has "
                                 f"{IMAGENET_CLASSES} ImageNet classes and a stem for inputs above {SMALL_INPUT} px, "
                                 f"but {layers['dataset']['name']} has {classes} classes at {side} px; use them "
                                 "for imagenet only (e.g. --weights imagenet=torchvision)")
        path, url = pretrained_file(architecture)
        if not path.is_file():
            raise PreflightError(f"model.weights {PRETRAINED}: {path} is missing, and nothing is downloaded here. "
                                 f"Fetch {url} to that path on a machine with internet (e.g. `curl -L {url} -o "
                                 f"{path}`), set TORCH_HOME to a folder whose hub/checkpoints/ holds it, or give "
                                 "the checkpoint file itself as model.weights")
    elif source and not Path(source).is_file():
        raise PreflightError(f"model.weights: checkpoint {source} (for {architecture}) does not exist; give a "
                             "state_dict saved with torch.save, or remove model.weights to train the model")


MODELS.preflight = check_weights


def _digest(source: str) -> str:
    if source == PRETRAINED:
        return PRETRAINED
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:24]


def load_weights(model: nn.Module, source: str, params: dict, dataset: Dataset) -> None:
    """Load a checkpoint (a state_dict, loaded with weights_only=True) or torchvision's pretrained
    weights (from the torch hub cache) into ``model``; weights that do not fit say why."""
    architecture = params["architecture"]
    try:
        if source == PRETRAINED:
            check_weights({"model": params, "dataset": {"name": dataset.name, "image_size": dataset.image_shape[-1]}})
            state = torchvision.models.get_model(architecture, weights="DEFAULT").state_dict()
        else:
            state = torch.load(source, weights_only=True, map_location="cpu")
            state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        model.load_state_dict(state)
    except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PreflightError(
            f"weights {source} do not fit {architecture} for {dataset.name} ({dataset.num_classes} classes, "
            f"{dataset.image_shape[-1]}x{dataset.image_shape[-1]} input): {first_line}") from None


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters()))
