"""Evaluation plumbing: letterbox mapping, padding crop, seg-only models, the mtc-eval CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressor import build_model, save_checkpoint
from compressor.checkpoint import default_preprocess
from compressor.cli.evaluate import main
from compressor.data import BddDataset, DataConfig, make_loader
from compressor.train import EvalConfig, evaluate
from runtime.geometry import letterbox_params

HW = (64, 128)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


def _loader(root, lane="thin", batch=3):
    ds = BddDataset(root, "val", DataConfig(input_hw=HW, lane_labels=lane))
    return make_loader(ds, batch, shuffle=False)


class Oracle(nn.Module):
    """Outputs the ground truth of the batches it is handed, in loader order: a model with
    perfect predictions, to check everything between the head and the metric."""

    def __init__(self, batches: list[dict], tasks=("det", "drivable", "lane")) -> None:
        super().__init__()
        self.batches, self.tasks, self.i = batches, tasks, 0
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        b = self.batches[self.i]
        self.i += 1
        out = {
            t: (F.one_hot(b[t], 2).permute(0, 3, 1, 2).float() - 0.5) * 20
            for t in ("drivable", "lane")
            if t in self.tasks
        }
        if "det" in self.tasks:
            det = torch.zeros(images.shape[0], 16, 6)
            for k, (i, _, cx, cy, w, h) in enumerate(b["targets"].tolist()):
                det[int(i), k % 16] = torch.tensor([cx, cy, w, h, 1.0, 1.0])
            out["det"] = det
        return out


def test_perfect_predictions_score_perfectly_at_original_resolution(synth_dataset):
    batches = list(_loader(synth_dataset))
    assert all(len(b["targets"]) <= 16 for b in batches)
    report = evaluate(
        Oracle(batches), _loader(synth_dataset), EvalConfig(det_mode="both", progress=False)
    )
    s = report["summary"]
    assert s["det_map50"] == pytest.approx(1.0) and s["det_recall"] == pytest.approx(1.0)
    assert s["det_map50_95"] == pytest.approx(1.0)  # boxes map back to the original exactly
    assert report["det"]["coco"]["map50_95"] == pytest.approx(1.0)
    assert s["drivable_miou"] == 1.0 and s["lane_iou"] == 1.0 and s["lane_recall"] == 1.0
    assert s["score"] == pytest.approx(1.0)
    # segmentation is scored without the letterbox padding
    lb = letterbox_params((180, 320), HW)
    assert (lb.new_h, lb.new_w) != HW
    assert report["lane"]["num_pixels"] == report["num_images"] * lb.new_h * lb.new_w
    assert report["protocol"]["lane_labels"] == "thin"
    assert "global confusion matrix" in report["protocol"]["seg_aggregation"]


def test_wrong_masks_score_zero_iou(synth_dataset):
    batches = list(_loader(synth_dataset))
    for b in batches:
        b["lane"] = 1 - b["lane"]
    report = evaluate(
        Oracle(batches, ("lane",)), _loader(synth_dataset), EvalConfig(progress=False)
    )
    assert report["summary"]["lane_iou"] == 0.0


def test_seg_only_model_is_scored_on_its_tasks_only(synth_dataset):
    batches = list(_loader(synth_dataset, lane="wide"))
    report = evaluate(
        Oracle(batches, ("drivable", "lane")),
        _loader(synth_dataset, lane="wide"),
        EvalConfig(seg_mode="per_batch", progress=False),
    )
    assert report["tasks"] == ["drivable", "lane"] and "det" not in report
    assert not any(k.startswith("det_") for k in report["summary"])
    assert report["protocol"]["lane_labels"] == "wide"
    assert (
        report["lane"]["mode"] == "per_batch"
        and "per-batch" in report["protocol"]["seg_aggregation"]
    )


def test_evaluate_restores_training_mode(synth_dataset):
    model = build_model("yolop", width=0.25, depth=0.33).train()
    evaluate(model, _loader(synth_dataset), EvalConfig(progress=False))
    assert model.training


def test_mtc_eval_writes_json_and_markdown(synth_dataset, tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(
        ckpt, build_model("yolop", width=0.25, depth=0.33), preprocess=default_preprocess(HW)
    )
    out = tmp_path / "rep" / "report.json"
    argv = [
        str(ckpt),
        "--data",
        str(synth_dataset),
        "--batch",
        "4",
        "--workers",
        "0",
        "--seg-mode",
        "per_batch",
        "--lane-labels",
        "wide",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["data"]["input_hw"] == list(HW)  # taken from the checkpoint
    assert report["checkpoint"]["model"] == "yolop" and len(report["checkpoint"]["sha256"]) == 64
    assert report["protocol"]["lane_labels"] == "wide" and report["lane"]["mode"] == "per_batch"
    md = out.with_suffix(".md").read_text()
    assert "per-batch" in md and "widened" in md
    assert "LL IoU" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv_tail, expected",
    [
        (["--imgsz", "50", "64"], "multiples of 32"),
        (["--det-mode", "yolop", "--conf", "1.5"], "conf_thres"),
    ],
)
def test_mtc_eval_user_mistakes_are_one_line(synth_dataset, tmp_path, capsys, argv_tail, expected):
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, build_model("yolop", width=0.25, depth=0.33))
    assert main([str(ckpt), "--data", str(synth_dataset), *argv_tail]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err


def test_mtc_eval_missing_checkpoint(synth_dataset, tmp_path, capsys):
    assert main([str(tmp_path / "nope.pt"), "--data", str(synth_dataset)]) == 2
    assert "does not exist" in capsys.readouterr().err
