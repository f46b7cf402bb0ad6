"""The detector as an ONNX model: same scores as the numpy detector, the committed file is
what export_onnx.py builds, and a swapped model with the wrong shapes is refused at the
manifest's model line."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

APP = Path(__file__).resolve().parents[2] / "apps" / "eo-filter"
sys.path.insert(0, str(APP))
sys.path.insert(0, str(APP.parent / "_shared"))

import export_onnx  # noqa: E402
from detector import DEFAULT_MODEL, Detector  # noqa: E402
from onnx_detector import DEFAULT_ONNX, OnnxDetector, load_detector  # noqa: E402
from onnxmodel import ModelMisfit  # noqa: E402
from tiles import make_dataset  # noqa: E402

from netemu.errors import InputError  # noqa: E402
from netemu.run.apps import load_manifest  # noqa: E402


def test_onnx_scores_equal_numpy_scores_on_test_tiles():
    x, y = make_dataset(9001, 300)  # a stream used neither for training nor for testing
    ref = Detector.load(DEFAULT_MODEL).score(x)
    got = OnnxDetector(DEFAULT_ONNX).score(x)
    assert got.shape == ref.shape == (300,)
    # float32 (onnxruntime's Conv) against numpy's float64: on a rare tile a rounding tips
    # a count feature (pixels over 8 sigma) or which pixel is strongest
    diff = np.abs(got - ref)
    assert (diff <= 1e-4).mean() >= 0.99 and diff.max() <= 0.02, np.sort(diff)[-5:]
    assert np.array_equal(got >= 0.5, ref >= 0.5)
    assert ((got >= 0.5) == y.astype(bool)).mean() >= 0.9  # and it still detects vessels
    # one tile at a time gives the same as a batch
    assert np.allclose(OnnxDetector(DEFAULT_ONNX).score(x[5]), got[5:6], atol=1e-6)


def test_committed_onnx_is_what_the_exporter_builds(tmp_path):
    out = tmp_path / "d.onnx"
    assert export_onnx.main(["--out", str(out)]) == 0
    assert out.read_bytes() == DEFAULT_ONNX.read_bytes(), "rerun apps/eo-filter/export_onnx.py"
    assert DEFAULT_ONNX.stat().st_size < 100_000


def test_detector_reports_its_work_from_the_graph():
    det = OnnxDetector(DEFAULT_ONNX)
    conv_ops = 2 * 64 * 64 * (121 + 8 * 121 + 25)  # box, 8 line kernels, spot
    assert conv_ops <= det.ops_per_tile <= 1.2 * conv_ops
    assert isinstance(load_detector(DEFAULT_MODEL), Detector)


def _model(path: Path, in_shape: list, out_shape: list) -> Path:
    """A stand-in model: global average of its input, as many outputs as out_shape says."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, in_shape)
    y = helper.make_tensor_value_info("prob", TensorProto.FLOAT, out_shape)
    axes = onnx.numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "axes")
    node = helper.make_node("ReduceMean", ["image", "axes"], ["prob"], keepdims=0)
    g = helper.make_graph([node], "swap", [x], [y], [axes])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return path


def _app_with(tmp_path: Path, model: Path) -> Path:
    d = tmp_path / "apps" / "eo-filter"
    d.mkdir(parents=True)
    text = (APP / "manifest.yaml").read_text()
    (d / "manifest.yaml").write_text(text.replace("model: detector.onnx", f"model: {model.name}"))
    shutil.copy(model, d / model.name)
    return d


def test_swapped_model_with_the_same_shapes_is_accepted_and_runs(tmp_path):
    d = _app_with(tmp_path, _model(tmp_path / "mine.onnx", ["n", 1, 64, 64], ["n"]))
    m = load_manifest(d)
    assert m.model == (d / "mine.onnx").resolve()
    x, _ = make_dataset(3, 4)
    scores = OnnxDetector(m.model).score(x)
    assert np.allclose(scores, x.reshape(4, -1).mean(axis=1), rtol=1e-5)


@pytest.mark.parametrize("in_shape,out_shape,why", [
    (["n", 3, 224, 224], ["n"], "dimension 1 is 3, the app needs 1"),
    ([1, 1, 64, 64], ["n"], "dimension 0 is fixed to 1, the app needs any size (batch)"),
    (["n", 1, 64, 64], ["n", 2], "has 2 dimensions, the app needs 1"),
])
def test_swapped_model_with_wrong_shapes_is_refused_at_the_manifest_line(
        tmp_path, in_shape, out_shape, why):
    d = _app_with(tmp_path, _model(tmp_path / "theirs.onnx", in_shape, out_shape))
    lines = (d / "manifest.yaml").read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.startswith("model:"))
    with pytest.raises(InputError) as e:
        load_manifest(d)
    msg = str(e.value)
    assert msg.startswith(f"{d / 'manifest.yaml'}:{line}: model: theirs.onnx does not fit"), msg
    assert why in msg
    with pytest.raises(ModelMisfit, match="the app needs"):  # the app refuses it too
        OnnxDetector(d / "theirs.onnx")


def test_manifest_model_that_is_not_onnx_or_missing(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"\x00not a model")
    d = _app_with(tmp_path, bogus)
    with pytest.raises(InputError, match=r"manifest.yaml:\d+: model: bogus.onnx: not an ONNX"):
        load_manifest(d)
    (d / "bogus.onnx").unlink()
    with pytest.raises(InputError, match="model file not found"):
        load_manifest(d)
