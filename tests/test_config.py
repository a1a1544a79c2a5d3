"""Every bad-input case gives one ConfigError naming the file, the field and what is allowed."""

from __future__ import annotations

import pytest

from dlas_dse.cli import main
from dlas_dse.config import ConfigError, load_space, load_study

GOOD_SPACE = """\
dataset:
  name: digits
model:
  architecture: {choices: [resnet18, mobilenet_v2]}
  epochs: 1
hardware:
  device: host-cpu
  threads: 1
"""

SPACE_CASES = {
    "typo in a layer name": (GOOD_SPACE.replace("model:", "modle:"),
                             "modle", ["unknown field 'modle'", "did you mean 'model'", "allowed: description, dataset"]),
    "unknown parameter": (GOOD_SPACE.replace("epochs: 1", "epoch: 1"),
                          "model.epoch", ["unknown field 'epoch'", "did you mean 'epochs'", "learning_rate"]),
    "wrong type": (GOOD_SPACE.replace("epochs: 1", "epochs: two"),
                   "model.epochs", ["expected int, got str 'two'"]),
    "out of range": (GOOD_SPACE.replace("threads: 1", "threads: 999"),
                     "hardware.threads", ["999 is above the maximum"]),
    "unknown model": (GOOD_SPACE.replace("mobilenet_v2]", "resnet19]"),
                      "model.architecture", ["unknown model architecture 'resnet19'", "supported: resnet18, resnet50, mobilenet_v2, vgg16_bn, densenet121, efficientnet_b0, mnasnet1_0"]),
    "sparsity of 1": (GOOD_SPACE.replace("epochs: 1", "epochs: 1\ncompression:\n  technique: weight_pruning\n  sparsity: 1.0"),
                      "compression.sparsity", ["1.0 is above the maximum 0.99"]),
    "ratio removing every channel": (
        GOOD_SPACE.replace("epochs: 1", "epochs: 1\ncompression:\n  technique: channel_pruning\n  ratio: 1.0"),
        "compression.ratio", ["1.0 is above the maximum 0.9"]),
    "parameter of a technique never selected": (
        GOOD_SPACE.replace("epochs: 1", "epochs: 1\ncompression:\n  technique: none\n  sparsity: 0.5"),
        "compression.sparsity", ["applies only to technique weight_pruning, which this space never selects"]),
    "unknown technique": (GOOD_SPACE.replace("epochs: 1", "epochs: 1\ncompression:\n  technique: pruning"),
                          "compression.technique", ["unknown compression technique 'pruning'",
                                                    "none, weight_pruning, channel_pruning, fp16, int8"]),
    "unknown device": (GOOD_SPACE.replace("device: host-cpu", "device: tpu"),
                       "hardware.device", ["unknown hardware device 'tpu'", "supported: host-cpu"]),
    "range of strings": (GOOD_SPACE.replace("architecture: {choices: [resnet18, mobilenet_v2]}",
                                            "architecture: {range: [resnet18, mobilenet_v2]}"),
                         "model.architecture.range", ["a range needs a numeric parameter", "use 'choices'"]),
    "empty range": (GOOD_SPACE.replace("epochs: 1", "epochs: {range: [3, 1]}"),
                    "model.epochs.range", ["low 3 must be below high 1"]),
    "two kinds": (GOOD_SPACE.replace("epochs: 1", "epochs: {fixed: 1, choices: [1, 2]}"),
                  "model.epochs", ["give exactly one of fixed, choices, range"]),
    "condition on a later parameter": (
        GOOD_SPACE.replace("epochs: 1", "epochs: {fixed: 1, when: {hardware.threads: 1}}"),
        "model.epochs.when.hardware.threads", ["not defined before this point"]),
    "condition value that never occurs": (
        GOOD_SPACE.replace("epochs: 1", "epochs: {fixed: 1, when: {model.architecture: vgg16}}"),
        "model.epochs.when.model.architecture", ["'vgg16' never occurs", "'resnet18', 'mobilenet_v2'"]),
    "constraints exclude everything": (
        GOOD_SPACE + "constraints:\n  - name: nothing-left\n    if: {hardware.threads: 1}\n",
        "constraints", ["exclude every combination"]),
    "constraint with an unknown key": (
        GOOD_SPACE + "constraints:\n  - iff: {hardware.threads: 1}\n",
        "constraints[0].iff", ["unknown field 'iff'", "did you mean 'if'"]),
    "yaml syntax": (GOOD_SPACE.replace("epochs: 1", "epochs: [1"), "(syntax)", ["line"]),
    "sparse weights without pruning": (
        GOOD_SPACE.replace("epochs: 1", "epochs: 1\nalgorithm:\n  conv: gemm\n  format: sparse"),
        "constraints", ["exclude every combination", "rule:sparse-needs-weight-pruning",
                        "only pay off for a weight-pruned model"]),
    "unknown layout": (GOOD_SPACE.replace("epochs: 1", "epochs: 1\nalgorithm:\n  layout: NCWH"),
                       "algorithm.layout", ["unknown value 'NCWH'", "allowed: NCHW, NHWC"]),
    "per value of an unknown dataset": (
        GOOD_SPACE.replace("epochs: 1", "epochs: {per: dataset.name, values: {digits: 1, imagenett: 0}}"),
        "model.epochs.per.dataset.name", ["'imagenett' never occurs", "takes 'digits'"]),
    "per value without values": (GOOD_SPACE.replace("epochs: 1", "epochs: {per: dataset.name}"),
                                 "model.epochs.values", ["expected a mapping from each value of dataset.name"]),
    "per value with a bad value": (
        GOOD_SPACE.replace("epochs: 1", "epochs: {per: dataset.name, values: {digits: -1}}"),
        "model.epochs", ["-1 is below the minimum 0"]),
    "per value of a later parameter": (
        GOOD_SPACE.replace("epochs: 1", "epochs: {per: hardware.device, values: {host-cpu: 1}}"),
        "model.epochs.per.hardware.device", ["not defined before this point"]),
    "winograd tile": (GOOD_SPACE.replace("epochs: 1", "epochs: 1\nalgorithm:\n  conv: winograd\n  tile: 3"),
                      "algorithm.tile", ["allowed: 2, 4"]),
}


@pytest.mark.parametrize("case", list(SPACE_CASES))
def test_bad_space_names_file_field_and_allowed_values(project, case):
    text, field, fragments = SPACE_CASES[case]
    path = project.write("search_spaces", "bad", text)
    with pytest.raises(ConfigError) as caught:
        load_space(str(path))
    assert caught.value.file == str(path)
    assert caught.value.field == field
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_built_in_rules_exclude_impossible_layer_4_combinations():
    space = load_study("algorithms").space
    rules = {c.name for c in space.constraints}
    assert {"rule:sparse-needs-weight-pruning", "rule:winograd-is-dense", "rule:nchwc-is-dense",
            "rule:nchwc-chooses-its-layout"} <= rules
    grid = list(space.grid())
    assert len(grid) == 48  # 2 models x (9 dense + 9 pruned dense + 6 pruned sparse)
    assert all(c["compression.technique"] == "weight_pruning" for c in grid if c["algorithm.format"] == "sparse")
    assert not any(c["algorithm.conv"] in ("winograd", "nchwc") and c["algorithm.format"] == "sparse" for c in grid)
    assert {c["algorithm.layout"] for c in grid if c["algorithm.conv"] == "nchwc"} == {"NCHW"}


def test_good_space_fills_defaults_and_implicit_conditions(project):
    space = load_space(str(project.write("search_spaces", "good", GOOD_SPACE)))
    names = [p.name for p in space.parameters]
    # the stack's order, every layer present, defaults filled in
    assert names.index("dataset.name") < names.index("model.architecture") < names.index("hardware.threads")
    assert space.parameter("compression.technique").values == ("none",)
    assert space.parameter("model.learning_rate").values == (0.05,)
    # an entry's own parameter is active only when its entry is selected
    assert space.parameter("hardware.threads").when == {}  # common to every device
    assert space.parameter("dataset.image_size").when == {"dataset.name": ("digits",)}


def test_a_parameter_given_per_value_of_an_earlier_one(project):
    text = GOOD_SPACE.replace("name: digits", "name: {choices: [digits, cifar10]}").replace(
        "epochs: 1", "epochs: {per: dataset.name, values: {cifar10: {choices: [10, 30]}}}\n"
                     "  weights: {per: dataset.name, values: {cifar10: 'ckpt/{architecture}.pt', digits: ''}}")
    space = load_space(str(project.write("search_spaces", "per", text)))
    points = list(space.grid())
    epochs = {(p["dataset.name"], p["model.epochs"]) for p in points}
    assert epochs == {("digits", 2), ("cifar10", 10), ("cifar10", 30)}  # digits: the default, 2
    assert {p["model.weights"] for p in points if p["dataset.name"] == "cifar10"} == {"ckpt/{architecture}.pt"}
    assert len(points) == 2 * 3  # two models x (digits + two epochs of cifar10)
    assert space.representative(**{"dataset.name": "cifar10"})["model.epochs"] == 10


def _study(project, text: str, space: str = GOOD_SPACE):
    project.write("search_spaces", "good", space)
    return project.write("studies", "s", "space: good\n" + text)


STUDY_CASES = {
    "unknown sampler": ("sampler: nsg2\n", "sampler", ["unknown sampler 'nsg2'", "nsga2, tpe, random, grid"]),
    "unknown sampler option": ("sampler: {name: nsga2, population: 4}\n", "sampler.population",
                               ["did you mean 'population_size'"]),
    "unknown objective": ("objectives: {acc: maximize}\n", "objectives.acc",
                          ["unknown objective 'acc'", "accuracy, latency_ms, size_bytes"]),
    "bad direction": ("objectives: {accuracy: max}\n", "objectives.accuracy", ["allowed: maximize, minimize"]),
    "bad n_trials": ("n_trials: 0\n", "n_trials", ["below the minimum 1"]),
    "bad storage": ("storage: results.db\n", "storage", ["SQLAlchemy URL"]),
    "typo in a section": ("measurment: {}\n", "measurment", ["did you mean 'measurement'"]),
    "bad setting": ("measurement: {warmup_runs: -1}\n", "measurement.warmup_runs", ["below the minimum 0"]),
    "grid over a continuous range": ("sampler: grid\n", "sampler", ["needs a 'step'"]),
}


@pytest.mark.parametrize("case", list(STUDY_CASES))
def test_bad_study_names_file_field_and_allowed_values(project, case):
    text, field, fragments = STUDY_CASES[case]
    space = GOOD_SPACE
    if case == "grid over a continuous range":
        space = GOOD_SPACE.replace("epochs: 1", "learning_rate: {range: [0.01, 0.1], log: true}")
    path = _study(project, text, space)
    with pytest.raises(ConfigError) as caught:
        load_study(str(path))
    assert (caught.value.file, caught.value.field) == (str(path), field)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_unknown_study_and_space_list_what_exists(project, monkeypatch):
    monkeypatch.chdir(project.root)
    project.write("search_spaces", "good", GOOD_SPACE)
    project.write("studies", "mine", "space: good\n")
    with pytest.raises(ConfigError, match="unknown study 'nope'; available: mine"):
        load_study("nope")
    project.write("studies", "other", "space: missing\n")
    with pytest.raises(ConfigError, match="unknown space 'missing'; available: good") as caught:
        load_study("other")
    assert caught.value.file.endswith("other.yaml") and caught.value.field == "space"


def test_cli_exits_2_before_writing_storage(project, monkeypatch, capsys):
    monkeypatch.chdir(project.root)
    project.write("search_spaces", "bad", GOOD_SPACE.replace("epochs: 1", "epochs: -3"))
    project.write("studies", "bad", "space: bad\n")
    assert main(["optimize", "--study", "bad"]) == 2
    error = capsys.readouterr().err
    assert "bad.yaml: model.epochs: -3 is below the minimum 0" in error
    assert not (project.root / "results").exists()


def test_every_shipped_study_and_space_validates():
    from dlas_dse.config import available
    from dlas_dse.files import project_root

    root = project_root()
    studies = [name for name, _ in available("studies")]
    assert "quickstart" in studies
    for name in studies:
        study = load_study(str(root / "studies" / f"{name}.yaml"))
        assert study.space.has_valid_configuration()
    for name, description in available("search_spaces"):
        assert description, f"search_spaces/{name}.yaml needs a one-line description"
        load_space(str(root / "search_spaces" / f"{name}.yaml"))


def test_command_line_overrides_are_validated(capsys):
    assert main(["optimize", "--study", "quickstart", "--storage", "results.db"]) == 2
    assert "command line: --storage: expected an SQLAlchemy URL" in capsys.readouterr().err
    assert main(["grid", "--study", "quickstart", "--dry-run", "--hardware", "tpu"]) == 2
    assert "command line (over " in capsys.readouterr().err
    assert main(["grid", "--study", "quickstart", "--dry-run", "--weights", "imagenett=torchvision"]) == 2
    error = capsys.readouterr().err
    assert "command line (over " in error and "model.weights.per.dataset.name: 'imagenett' never occurs" in error
    assert main(["grid", "--study", "quickstart", "--dry-run", "--weights", "imagenet=torchvision"]) == 0  # not here
    assert main(["grid", "--study", "quickstart", "--dry-run", "--weights", "a.pt", "b.pt"]) == 2
    assert "command line: --weights: give one SOURCE for every dataset" in capsys.readouterr().err
    assert main(["grid", "--study", "quickstart", "--dry-run", "--weights", "digits=a.pt"]) == 0
