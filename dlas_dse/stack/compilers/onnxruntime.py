"""The ``onnxruntime`` compiler: a torch.onnx (dynamo) export of the BatchNorm-folded model in an ONNX
Runtime session on the CPU execution provider; int8 by ORT's static QDQ quantisation calibrated on
the compression's images, in the form ORT runs on integer kernels."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from dlas_dse.cache import ArtifactCache
from dlas_dse.lazy import lazy_import
from dlas_dse.registry import COMPILERS
from dlas_dse.stack.compilers.base import Build, BuildRequest, Executable
from dlas_dse.stack.compilers.peers import cached_build, folded_model, time_calls
from dlas_dse.stack.cpu_features import cpuinfo_line

onnx = lazy_import("onnx")
onnxruntime = lazy_import("onnxruntime")
onnxscript = lazy_import("onnxscript")
quantization = lazy_import("onnxruntime.quantization")
torch = lazy_import("torch")

ORT_INT8_TOLERANCE = 0.3
"""ORT's QDQ int8 (every layer's output quantised too, asymmetric) is not the project's int8
arithmetic, so it is checked against the float model. On the digits models the compression's 5%
did not hold with int8 activations (S8S8, before ``ACTIVATION_TYPE``): the largest |error| over 4
images (the default verification samples) reached 19% (mobilenet_v2) and 11% (resnet18) of their
largest logit, over one image up to 65%, while a wrong kernel is off by ~100%."""

def _cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (int8 dot products without intermediate saturation)."""
    flags = cpuinfo_line("flags").split()
    return "avx512_vnni" in flags or "avx_vnni" in flags


REDUCE_RANGE = not _cpu_has_vnni()
"""ONNX Runtime's int8 kernels on x86 without VNNI (AVX2's vpmaddubsw) saturate 16-bit sums of
8-bit products; 7-bit weights avoid that. Seen on a znver3 (AVX2) host: full-range int8 weights
put mobilenet_v2's output 2.1 off the float model where 1.95 was allowed."""

ACTIVATION_TYPE = "QUInt8"
"""int8 activations as uint8 (U8S8, ONNX Runtime's form for x86): ORT fuses every QDQ-wrapped
convolution into ``QLinearConv`` and residual additions into ``QLinearAdd``. With int8 activations
(S8S8) ORT 1.32 on x86 kept 12 of resnet18's 20 convolutions (15 of mobilenet_v2's 52) as float
``Conv`` between DequantizeLinear/QuantizeLinear, and the additions in float: an int8 peer slower
than float32 (2026-12-06)."""
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger")
FLOAT_OPS = ("Conv", "MatMul", "Gemm")


def _layers_by_arithmetic(path: Path) -> dict:
    """Convolutions and matrix products of the model at ``path`` as ONNX Runtime optimises it for
    this CPU: on integer kernels (``int8_layers``) and in float (``float_layers``)."""
    optimized = path.with_suffix(".optimized.onnx")
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(optimized)
    options.log_severity_level = 3  # not its warning that the optimised graph is specific to this CPU: it is only read here
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(node.op_type for node in onnx.load(optimized).graph.node)
    optimized.unlink()
    return {"int8_layers": sum(ops[op] for op in INTEGER_OPS), "float_layers": sum(ops[op] for op in FLOAT_OPS)}


class OnnxRuntimeExecutable(Executable):
    """An ONNX Runtime session on the CPU execution provider: the device's threads within an
    operator, one across operators."""

    def __init__(self, path: Path, threads: int, batch_size: int, input_dtype: str):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name
        self.batch_size, self._input_dtype = batch_size, input_dtype

    def _feed(self, batch: np.ndarray) -> dict:
        return {self._input_name: np.ascontiguousarray(batch, dtype=self._input_dtype)}

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, self._feed(batch))[0].astype(np.float32)

    def time_runs(self, batch: np.ndarray, count: int) -> list[float]:
        feed = self._feed(batch)
        return time_calls(lambda: self._session.run(None, feed), count)


class _CalibrationImages:
    """ONNX Runtime's calibration data (its reader protocol is ``get_next``): ``images`` in batches
    of ``batch_size``; the last one wraps around to the first images, so that every tensor's
    min/max (what MinMax calibration keeps) is the same at any batch size."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int):
        self._batches = iter([{input_name: images[np.arange(start, start + batch_size) % len(images)]}
                              for start in range(0, len(images), batch_size)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def onnx_parameter_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers that are parameters: not scalars (e.g. a ReLU6 bound) and not
    int64 (ONNX's shape and axis operands)."""
    return sum(onnx.numpy_helper.to_array(tensor).nbytes for tensor in model.graph.initializer
               if len(tensor.dims) and tensor.data_type != onnx.TensorProto.INT64)


@COMPILERS.register("onnxruntime")
def onnxruntime_compiler(request: BuildRequest, cache: ArtifactCache) -> Build:
    """ONNX Runtime (CPU): torch.onnx (dynamo) export of the folded model; int8 by ORT's static QDQ
    quantisation (per-channel symmetric int8 weights, uint8 activations calibrated by MinMax on the
    compression's calibration images; the record counts the layers ORT runs on integer kernels);
    float16 as an fp16 model."""
    quantized = request.precision == "int8"

    def create(directory: Path) -> dict:
        model = folded_model(request)
        dtype = next(model.parameters()).dtype
        example = torch.zeros((request.batch_size, *request.image_shape), dtype=dtype)
        program = torch.onnx.export(model, (example,), directory / "model.onnx", dynamo=True, verbose=False)
        deployed = "model.onnx"
        if quantized:
            deployed = "model.int8.onnx"
            if request.calibration_images is None:
                raise ValueError("onnxruntime int8 calibrates on the compression's images: the build request "
                                 "has none (calibration_images)")
            reader = _CalibrationImages(program.model.graph.inputs[0].name, request.calibration_images,
                                        request.batch_size)
            quantization.quantize_static(
                directory / "model.onnx", directory / deployed, reader, quant_format=quantization.QuantFormat.QDQ,
                per_channel=True, activation_type=getattr(quantization.QuantType, ACTIVATION_TYPE),
                weight_type=quantization.QuantType.QInt8, reduce_range=REDUCE_RANGE,
                extra_options={"WeightSymmetric": True})
        layers = _layers_by_arithmetic(directory / deployed) if quantized else {}
        return {"deployed": deployed, "input_dtype": str(dtype).replace("torch.", ""),
                "deployed_bytes": onnx_parameter_bytes(onnx.load(directory / deployed)), **layers}

    directory, record = cached_build(request, cache, {"onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
                                                "onnxruntime": onnxruntime.__version__,
                                                "reduce_range": REDUCE_RANGE, "activations": ACTIVATION_TYPE}, create)
    if quantized:
        record.update(verified_against="float32", tolerance=ORT_INT8_TOLERANCE)
    return Build(OnnxRuntimeExecutable(directory / record["deployed"], request.device.threads,
                                       request.batch_size, record["input_dtype"]), record)
