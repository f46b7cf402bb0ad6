"""An app's ONNX model: the input and output shapes a model file declares, and the check
that they fit the shapes the app's code needs (its manifest's ``model_io``).

A developer swaps the model by changing one manifest line; a model that the app could not
feed, or whose answer it could not read, is refused before anything starts, with the
manifest's file and line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Dim = int | str | None
"""A dimension: a fixed size, a named free size (``batch``), or unknown (free)."""


class ModelFileError(ValueError):
    """The file is not an ONNX model that can be read."""


@dataclass(frozen=True)
class TensorShape:
    """One graph input or output: its name, element type (ONNX's name, ``FLOAT``) and shape."""

    name: str
    elem_type: str
    shape: tuple[Dim, ...]


@dataclass(frozen=True)
class ModelIO:
    """A model's graph inputs (initializers left out) and outputs."""

    inputs: tuple[TensorShape, ...]
    outputs: tuple[TensorShape, ...]


def read_model_io(path: Path) -> ModelIO:
    """The inputs and outputs an ONNX file declares (weights are not loaded)."""
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise ModelFileError("the onnx package is not installed") from e
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several kinds
        raise ModelFileError(f"not an ONNX model ({type(e).__name__}: {e})") from e
    graph = model.graph
    if not graph.output:
        raise ModelFileError("not an ONNX model (the graph has no outputs)")
    weights = {t.name for t in graph.initializer}

    def shape_of(vi: onnx.ValueInfoProto) -> TensorShape:
        t = vi.type.tensor_type
        dims: list[Dim] = []
        for d in t.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(str(d.dim_param))
            else:
                dims.append(None)
        elem = onnx.TensorProto.DataType.Name(t.elem_type) if t.elem_type else "UNDEFINED"
        return TensorShape(vi.name, elem, tuple(dims))

    return ModelIO(
        tuple(shape_of(v) for v in graph.input if v.name not in weights),
        tuple(shape_of(v) for v in graph.output),
    )


def format_shape(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def shape_misfit(got: Sequence[Dim], want: Sequence[Dim]) -> str | None:
    """Why a model's shape ``got`` does not fit the app's ``want`` (None if it fits).

    A fixed size in ``want`` needs the same size, or a free one; a named free size in
    ``want`` (``batch``) needs a free size: a model fixed to batch 1 cannot take a batch.
    """
    if len(got) != len(want):
        return f"has {len(got)} dimensions, the app needs {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if isinstance(w, int) and isinstance(g, int) and g != w:
            return f"dimension {i} is {g}, the app needs {w}"
        if isinstance(w, str) and isinstance(g, int):
            return f"dimension {i} is fixed to {g}, the app needs any size ({w})"
    return None


def model_misfit(io: ModelIO, want_input: Sequence[Dim], want_output: Sequence[Dim]) -> str | None:
    """Why a model does not fit an app that feeds one input shaped ``want_input`` and
    reads one output shaped ``want_output`` (None if it fits)."""
    for role, tensors, want in (("input", io.inputs, want_input), ("output", io.outputs, want_output)):
        if len(tensors) != 1:
            names = ", ".join(t.name for t in tensors) or "none"
            return f"the model has {len(tensors)} {role}s ({names}), the app needs one"
        t = tensors[0]
        why = shape_misfit(t.shape, want)
        if why:
            return (f"the model's {role} {t.name!r} is {format_shape(t.shape)}, the app needs "
                    f"{format_shape(want)}: {why}")
        if t.elem_type != "FLOAT":
            return f"the model's {role} {t.name!r} holds {t.elem_type}, the app needs FLOAT (float32)"
    return None
