"""User mistakes through the CLI: one `error: ...` line on stderr, exit 2, nothing written."""

from __future__ import annotations

import pytest
import torch

from export.cli import main


def _run(capsys, *argv):
    rc = main([*map(str, argv), "--no-progress"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x80\x04not really a pickle")
    rc, out, err = _run(capsys, bad, "-o", tmp_path / "out")
    assert rc == 2 and "is a Python pickle that is not a checkpoint" in _one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_checkpoint_that_is_not_ours(tmp_path, capsys):
    foreign = tmp_path / "resnet.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    rc, out, err = _run(capsys, foreign, "-o", tmp_path / "out")
    assert rc == 2 and "no registered model's importer recognises" in _one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint(tmp_path, capsys):
    rc, _, err = _run(capsys, tmp_path / "nope.pt", "-o", tmp_path / "out")
    assert rc == 2 and "does not exist" in _one_error_line(err)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["--imgsz", "100", "200"],
            "both sides must be positive multiples of 32 (the stride rule of "
            "model 'yolop'); try --imgsz 96 192",
        ),
        (["--batch", "4", "--max-batch", "2"], "min-batch 1, batch 4, max-batch 2"),
        (["--min-batch", "3", "--max-batch", "2"], "must satisfy min <= opt <= max"),
        (["--opset", "21"], "outside 9..20"),
        (["--engine", "fp16", "--trt-target", "11", "--no-fp16-onnx"], "drop --no-fp16-onnx"),
        (["--engine", "int4"], "argument --engine: invalid choice: 'int4'"),
        (
            ["--engine", "int8"],
            "--engine int8 builds the INT8 (Q/DQ) ONNX, which only --int8 makes",
        ),
        (["--dla", "0", "--max-batch", "4"], "DLA runs static shapes only, but the batch range"),
        (["--name", "../outside"], "must be a plain file name"),
    ],
)
def test_bad_options(tiny_ckpt, tmp_path, capsys, argv, expected):
    rc, _, err = _run(capsys, tiny_ckpt, "-o", tmp_path / "out", *argv)
    assert rc == 2 and expected in _one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_unwritable_output_path(tiny_ckpt, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, _, err = _run(capsys, tiny_ckpt, "-o", blocker / "out")
    line = _one_error_line(err)
    assert rc == 2 and f"{blocker / 'out'} cannot be created: {blocker} is a file" in line
    assert "choose another path" in line


def test_lint_only_on_a_crafted_onnx(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="ok"),
            helper.make_node("Unique", ["r"], ["y"], name="uniq"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    rc, out, err = _run(capsys, path, "--lint-only", "-o", tmp_path / "rep")
    assert rc == 2
    assert "TensorRT 10.3 lint: FAIL" in out
    assert (
        "error: [op-support] node 'uniq' (Unique): not supported by the onnx-tensorrt parser" in out
    )
    assert "error: [static-shape]" not in out or "'y'" in out
    assert (tmp_path / "rep" / "bad.lint.json").is_file()
    rc11, out11, _ = _run(capsys, path, "--lint-only", "--trt-target", "11", "-o", tmp_path / "rep")
    assert rc11 == 2 and "TensorRT 11 lint: FAIL" in out11 and "unverified" in out11


def test_reexport_refuses_then_overwrite_leaves_no_stale_fp16(tiny_ckpt, tmp_path, capsys):
    """An old `<name>_fp16.onnx` + sidecar must not survive beside a new export of that name."""
    out = tmp_path / "out"
    common = [tiny_ckpt, "-o", out, "--engine", "none", "--max-batch", "2", "--name", "m"]
    common += ["--fp16-min-mask-agreement", "90", "--fp16-min-iou", "0.3"]
    common += ["--fp16-max-score-delta", "1"]
    rc, _, err = _run(capsys, *common)
    assert rc == 0, err
    assert (out / "m_fp16.onnx").is_file() and (out / "m_fp16.onnx.json").is_file()
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    rc, _, err = _run(capsys, *common, "--no-fp16-onnx")
    assert rc == 2 and "already holds an export named 'm'" in _one_error_line(err)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    rc, _, err = _run(capsys, *common, "--no-fp16-onnx", "--overwrite")
    assert rc == 0, err
    assert not (out / "m_fp16.onnx").exists() and not (out / "m_fp16.onnx.json").exists()
    assert (out / "m.onnx").is_file() and (out / "notes.txt").read_text() == "mine"
    assert oct((out / "m.onnx").stat().st_mode & 0o777) != oct(0o600)
