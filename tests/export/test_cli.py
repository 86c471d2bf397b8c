"""CLI surface: every flag lands in one ExportConfig field; --help lists the trtexec-style flags."""

from __future__ import annotations

from export.cli import build_parser, config_from_args, main
from export.config import (
    CheckOptions,
    ExportConfig,
    HalfOptions,
    InputOptions,
    OnnxOptions,
    OutputOptions,
    TensorRTOptions,
)


def test_flags_map_to_config_fields():
    args = build_parser().parse_args(
        [
            "ck.pt",
            "-o",
            "o",
            "--name",
            "s",
            "--imgsz",
            "384",
            "640",
            "--batch",
            "2",
            "--min-batch",
            "1",
            "--max-batch",
            "8",
            "--opset",
            "16",
            "--nms-in-graph",
            "--conf",
            "0.25",
            "--iou",
            "0.5",
            "--max-det",
            "100",
            "--seg-output",
            "logits",
            "--simplifier",
            "none",
            "--no-fp16-onnx",
            "--fp16-keep-resize-fp32",
            "--engine",
            "fp32",
            "--workspace",
            "2048",
            "--opt-level",
            "5",
            "--timing-cache",
            "tc",
            "--dla-core",
            "1",
            "--trt-target",
            "10.3",
            "--dry-run",
            "--allow-lint-fail",
            "--seed",
            "3",
            "--no-progress",
            "--fp16-min-mask-agreement",
            "98",
            "--fp16-min-iou",
            "0.9",
            "--fp16-max-score-delta",
            "0.1",
        ]
    )
    cfg = config_from_args(args)
    assert cfg == ExportConfig(
        output=OutputOptions(dir="o", name="s", progress=False),
        input=InputOptions(imgsz=(384, 640), batch=2, min_batch=1, max_batch=8),
        onnx=OnnxOptions(
            opset=16,
            nms_in_graph=True,
            seg_output="logits",
            conf_thres=0.25,
            iou_thres=0.5,
            max_det=100,
            simplifier="none",
        ),
        half=HalfOptions(enabled=False, keep_resize_fp32=True),
        tensorrt=TensorRTOptions(
            engine="fp32",
            workspace_mib=2048,
            opt_level=5,
            timing_cache_dir="tc",
            dla_core=1,
            target="10.3",
            dry_run=True,
            allow_lint_fail=True,
        ),
        seed=3,
        checks=CheckOptions(fp16=type(cfg.checks.fp16)(98.0, 0.9, 0.1)),
    )


def test_defaults_are_the_config_defaults():
    cfg = config_from_args(build_parser().parse_args(["ck.pt"]))
    assert cfg == ExportConfig()
    assert (cfg.tensorrt.engine, cfg.onnx.simplifier, cfg.onnx.opset, cfg.onnx.seg_output) == (
        "fp16",
        "onnxslim",
        17,
        "argmax",
    )


def test_help_lists_flags(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in (
        "--engine",
        "--imgsz",
        "--max-batch",
        "--nms-in-graph",
        "--seg-output",
        "--simplifier",
        "--fp16-onnx",
        "--workspace",
        "--opt-level",
        "--timing-cache",
        "--dla-core",
        "--trt-target",
        "--dry-run",
        "--lint-only",
    ):
        assert flag in text
