"""Full-size YOLOP (width 1, 7.9M parameters) at 384x640 on CPU: minutes, so `-m slow`."""

from __future__ import annotations

import json

import pytest
import torch

from compressor import build_model, save_checkpoint
from export import ExportConfig, Fp16Thresholds, export_model
from export.config import CheckOptions, InputOptions, OnnxOptions, OutputOptions, TensorRTOptions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def yolop_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("yolop")
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    with torch.no_grad():
        model(torch.randn(2, 3, 384, 640))
    path = tmp_path_factory.mktemp("full") / "yolop.pt"
    save_checkpoint(path, model.eval())
    return path


@pytest.mark.parametrize("nms", [False, True])
def test_full_yolop_export_dry_run(yolop_ckpt, tmp_path, nms):
    fp16 = Fp16Thresholds(min_mask_agreement_pct=90.0, min_mean_iou=0.3, max_score_delta=1.0)
    cfg = ExportConfig(
        output=OutputOptions(str(tmp_path / "out"), progress=False),
        input=InputOptions(max_batch=2),
        onnx=OnnxOptions(nms_in_graph=nms),
        tensorrt=TensorRTOptions(dry_run=True),
        checks=CheckOptions(fp16=fp16),
    )
    result = export_model(yolop_ckpt, cfg)
    s = result.summary
    assert s["parity"]["ok"] and s["lint"]["fp32"]["ok"] and s["lint"]["fp16"]["ok"]
    sizes = {a["kind"]: a["size_bytes"] for a in result.artifacts if a["kind"].startswith("onnx")}
    assert 30e6 < sizes["onnx"] < 34e6 and 15e6 < sizes["onnx_fp16"] < 17.5e6
    print(
        json.dumps(
            {
                "nms": nms,
                "sizes": sizes,
                "parity": s["parity"]["outputs"],
                "fp16": s["fp16"],
                "timings_s": s["timings_s"],
            },
            indent=1,
        )
    )
