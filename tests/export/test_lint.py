"""GPU-free TensorRT lint: op tables as data, crafted graphs that fail each check, and the
report naming node, op and reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportConfigError, LintError
from export.tensorrt.lint import DATA_DIR, lint_onnx, op_table, require_lint
from runtime.tensorrt.targets import TARGETS, get_target


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def test_tables_name_their_source_and_opset_range():
    for target, hi in (("10.3", 20), ("11", 24)):
        t = op_table(target)
        assert "onnx/onnx-tensorrt" in t["source"] and "docs/operators.md" in t["source"]
        assert (get_target(target).opset_min, get_target(target).opset_max) == (9, hi)
        assert len(t["ops"]) == 200
    t10, t11 = op_table("10.3"), op_table("11")
    assert t10["ops"]["Conv"]["supported"] and t10["ops"]["NonMaxSuppression"]["supported"]
    assert not t10["ops"]["Unique"]["supported"] and not t10["ops"]["Det"]["supported"]
    # added after 10.3 (Changelog.md): unsupported in the 10.3 table, supported in 11
    assert not t10["ops"]["STFT"]["supported"] and t11["ops"]["STFT"]["supported"]
    assert t10["confidence"] == "derived" and t11["confidence"] == "unverified"
    # every target has its table, and no table is left without a target
    assert sorted(p.name for p in DATA_DIR.iterdir()) == sorted(
        t.op_table for t in TARGETS.values()
    )
    assert sorted(p.name for p in DATA_DIR.iterdir()) == ["trt_ops_10.3.json", "trt_ops_11.json"]
    with pytest.raises(ExportConfigError, match="no op table for TensorRT '9'"):
        op_table("9")


def test_unsupported_op_is_named_with_node_and_reason():
    m = _model(
        [helper.make_node("Det", ["x"], ["y"], name="my_det")],
        [_vi("x", TensorProto.FLOAT, ["batch", 3, 3])],
        [_vi("y", TensorProto.FLOAT, ["batch"])],
    )
    rep = lint_onnx(m, "10.3")
    assert not rep.ok
    [err] = rep.errors
    assert (err.check, err.node, err.op) == ("op-support", "my_det", "Det")
    assert "not supported by the onnx-tensorrt parser" in err.reason
    assert "error: [op-support] node 'my_det' (Det)" in rep.format_text()
    with pytest.raises(LintError, match=r"m.onnx would not build in TensorRT 10.3: Det 'my_det'"):
        require_lint(rep, "m.onnx")
    json.dumps(rep.to_dict())  # the JSON report is serialisable as is


def test_opset_custom_domain_static_shape_uint8_and_restrictions():
    k = numpy_helper.from_array(np.array([5000], np.int64), "k")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("TopK", ["r", "k"], ["v", "i"], axis=1, name="big_topk"),
        helper.make_node("Cast", ["v"], ["u8"], to=TensorProto.UINT8, name="to_u8"),
        helper.make_node("Cast", ["u8"], ["y"], to=TensorProto.FLOAT, name="back"),
        helper.make_node("MyPlugin", ["y"], ["z"], domain="com.acme", name="plug"),
    ]
    m = _model(
        nodes,
        [_vi("x", TensorProto.FLOAT, ["batch", "n"])],
        [_vi("z", TensorProto.FLOAT, ["batch", 5000])],
        [k],
        opset=21,
    )
    m.opset_import.append(helper.make_opsetid("com.acme", 1))
    rep = lint_onnx(m, "10.3")
    checks = {(e.check, e.node) for e in rep.errors}
    assert ("opset", "") in checks  # 21 > 20
    assert ("op-restriction", "big_topk") in checks  # K=5000 >= 3840
    assert ("op-support", "plug") in checks  # custom domain needs a plugin
    assert ("uint8", "") in checks  # UINT8 inside the graph
    assert ("static-shape", "") in checks  # 'n' is dynamic and not the batch axis
    assert "K=5000 is not below 3840" in rep.format_text()


def test_resize_modes_checked():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic", name="rs")
    m = _model(
        [node],
        [_vi("x", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [_vi("y", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [scales],
    )
    [err] = lint_onnx(m, "10.3").errors
    assert err.node == "rs" and "mode 'cubic' unsupported" in err.reason


def test_unverified_table_warns_but_passes():
    m = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", TensorProto.FLOAT, ["batch", 4])],
        [_vi("y", TensorProto.FLOAT, ["batch", 4])],
    )
    assert lint_onnx(m, "10.3").issues == []
    rep = lint_onnx(m, "11")
    assert rep.ok and [i.check for i in rep.issues] == ["op-table"]
