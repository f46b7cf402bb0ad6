"""An app's ONNX model, run with onnxruntime on one thread, and its work per item.

The work (operations per batch item) is counted from the graph once, at load: convolutions
and matrix products count two operations per multiply-add, sorts ``n log2 n``, every other
node one per output element. The app kit's compute model turns that count into scenario
time on the node (see ``appkit.Compute``), so a swapped model's cost follows its graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from netemu.run.apps.model import Dim, ModelIO, TensorShape, format_shape, model_misfit


class ModelMisfit(ValueError):
    """The model's input or output shapes are not the ones the app feeds and reads."""


def _numel(shape: Sequence[int]) -> int:
    return int(np.prod(shape)) if shape else 1


def count_ops(model_path: Path) -> float:
    """Operations for one batch item (batch dimensions set to 1), from inferred shapes."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(model_path))
    for vi in model.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = 1
    model = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [int(d.dim_value) for d in dims]
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    ops = 0.0
    for node in model.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        if node.op_type == "Conv" and node.input[1] in shapes:
            w = shapes[node.input[1]]  # [out, in/group, kh, kw]
            ops += 2.0 * _numel(out) * _numel(w[1:])
        elif node.op_type in ("MatMul", "Gemm") and node.input[0] in shapes:
            k = shapes[node.input[0]][-1]
            ops += 2.0 * _numel(out) * k
        elif node.op_type == "TopK" and node.input[0] in shapes:
            n = shapes[node.input[0]][-1]
            ops += _numel(shapes[node.input[0]]) * math.log2(max(n, 2))
        else:
            ops += sum(_numel(shapes.get(o, [])) for o in node.output if o in shapes)
    return ops


_ORT_TYPES = {"tensor(float)": "FLOAT", "tensor(double)": "DOUBLE", "tensor(uint8)": "UINT8",
              "tensor(int64)": "INT64", "tensor(float16)": "FLOAT16"}


def _session_io(session: Any) -> ModelIO:
    """The model's inputs and outputs as onnxruntime reads them (no onnx import needed)."""

    def conv(args: Any) -> TensorShape:
        return TensorShape(args.name, _ORT_TYPES.get(args.type, args.type),
                           tuple(d if isinstance(d, (int, str)) else None for d in args.shape))

    return ModelIO(tuple(conv(a) for a in session.get_inputs()),
                   tuple(conv(a) for a in session.get_outputs()))


class OnnxModel:
    """An ONNX model checked against the shapes the app needs, on one CPU thread.

    ``want_input``/``want_output``: the app's shapes (a name is a free size, e.g.
    ``["batch", 1, 64, 64]``); a model that does not fit raises :class:`ModelMisfit`.
    The work per item is the model's ``ops_per_item`` metadata when it has one (the
    exporter writes it), else counted from the graph (:func:`count_ops`). Batches run in
    chunks of ``chunk`` items, which bounds the memory a large query takes.
    """

    def __init__(self, path: str | Path, want_input: Sequence[Dim], want_output: Sequence[Dim],
                 *, chunk: int = 32) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors have no common base
            raise ModelMisfit(f"{self.path}: not a model onnxruntime can run ({e})") from e
        io = _session_io(self.session)
        why = model_misfit(io, want_input, want_output)
        if why:
            raise ModelMisfit(f"{self.path}: {why}")
        self.chunk = chunk
        self.runtime = f"onnxruntime {ort.__version__}"
        self.input_name = io.inputs[0].name
        self.output_name = io.outputs[0].name
        self.input_shape = io.inputs[0].shape
        self.metadata: dict[str, str] = dict(
            self.session.get_modelmeta().custom_metadata_map or {})
        declared = self.metadata.get("ops_per_item")
        self.ops_per_item = float(declared) if declared else count_ops(self.path)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's output for a batch (float32), ``chunk`` items at a time."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        parts = [self.session.run([self.output_name], {self.input_name: x[i:i + self.chunk]})[0]
                 for i in range(0, len(x), self.chunk)]
        return np.concatenate(parts) if parts else np.empty((0,), np.float32)

    def describe(self) -> str:
        return (f"{self.path.name} ({format_shape(self.input_shape)} → {self.output_name}, "
                f"{self.ops_per_item / 1e6:.1f} Mop per item)")
