"""mtc-compress end to end on the synthetic set (tiny teacher, 64x128): student checkpoint that
rebuilds, teacher-vs-student report (JSON, Markdown, PNG) with consistent deltas, and every bad
input a one-line error before any work."""

from __future__ import annotations

import json

import pytest
import torch

from compressor import build_model, load_checkpoint, save_checkpoint
from compressor.checkpoint import default_preprocess
from compressor.cli.compress import main
from compressor.flops import count_params

HW = (64, 128)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(
        path, build_model("yolop", width=0.25, depth=0.33), preprocess=default_preprocess(HW)
    )
    return path


def args(teacher, data, out, *extra):
    return [
        "--teacher",
        str(teacher),
        "--data",
        str(data),
        "-o",
        str(out),
        "--imgsz",
        "64",
        "128",
        "--calib-batches",
        "2",
        "--batch",
        "2",
        "--workers",
        "0",
        "--no-progress",
        "--max-train-images",
        "4",
        "--max-val-images",
        "2",
        *extra,
    ]


def test_compress_cli_end_to_end(teacher_ckpt, synth_dataset, tmp_path, capsys):
    out = tmp_path / "c"
    code = main(
        args(
            teacher_ckpt,
            synth_dataset,
            out,
            "--ratio",
            "0.4",
            "--importance",
            "tci_gcp",
            "--kd",
            "--epochs",
            "1",
            "--taps",
            "neck_s8",
            "neck_s16",
        )
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "params" in printed and "student:" in printed
    for name in ("student.pt", "report.json", "report.md", "widths.png"):
        assert (out / name).is_file(), name
    rep = json.loads((out / "report.json").read_text())
    assert rep["params_reduction"] >= 0.4
    assert rep["pruning"]["importance"] == "tci_gcp" and rep["pruning"]["achieved_ratio"] >= 0.4
    assert rep["training"]["kd"] is True
    assert [t["name"] for t in rep["training"]["taps"]] == ["neck_s8", "neck_s16"]
    t, s = rep["teacher"]["metrics"], rep["student"]["metrics"]
    assert set(rep["deltas_points"]) >= {"det_map50", "det_recall", "drivable_miou", "lane_iou"}
    for k, d in rep["deltas_points"].items():
        assert d == pytest.approx(100 * (s[k] - t[k]), abs=1e-3), k
    assert rep["val_images"] == 2 and rep["eval_protocol"]["lane_labels"] == "thin"
    student, ckpt = load_checkpoint(out / "student.pt")
    assert count_params(student) == rep["student"]["params"]
    assert ckpt.pruning["layers"] and ckpt.provenance["stage"] == "compress"
    assert ckpt.metrics == s and ckpt.preprocess["input_hw"] == list(HW)
    md = (out / "report.md").read_text()
    assert "| | teacher | student | delta |" in md and "widths.png" in md and "mAP50" in md
    assert (out / "widths.png").read_bytes()[:4] == b"\x89PNG"


def test_prune_only_without_kd(teacher_ckpt, synth_dataset, tmp_path):
    out = tmp_path / "p"
    assert (
        main(
            args(
                teacher_ckpt,
                synth_dataset,
                out,
                "--no-kd",
                "--epochs",
                "0",
                "--importance",
                "l1",
                "--target",
                "flops",
                "--ratio",
                "0.3",
            )
        )
        == 0
    )
    rep = json.loads((out / "report.json").read_text())
    assert rep["training"] == {"trained": False}
    assert rep["flops_reduction"] >= 0.3
    # FLOPs are counted at the protocol's 640x384 in both the pruning and the final report
    assert rep["pruning"]["flops_input_hw"] == rep["flops_input_hw"] == [384, 640]
    assert rep["flops_reduction"] == pytest.approx(rep["pruning"]["flops_ratio"], abs=1e-6)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--ratio", "1.2"], "ratio must be in (0, 1)"),
        (["--protect", "model.99"], "protected layer 'model.99' matches no module"),
        (["--taps", "neck_s4"], "tap 'neck_s4' does not exist"),
        (["--ratio", "0.95", "--min-width", "16"], "at most"),
        (["--task-weight", "det:2"], "expected TASK=WEIGHT"),
        (["--imgsz", "60", "128"], "multiples of 32"),
        (["--kd-loss", "mse", "--importance", "tcii"], "did you mean 'tci'"),
    ],
)
def test_bad_input_is_one_line_before_any_work(
    teacher_ckpt, synth_dataset, tmp_path, capsys, extra, message
):
    out = tmp_path / "bad"
    code = main(args(teacher_ckpt, synth_dataset, out, "--epochs", "1", *extra))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (out / "student.pt").exists() and not (out / "train").exists()


def test_missing_teacher_and_used_output_folder(teacher_ckpt, synth_dataset, tmp_path, capsys):
    assert main(args(tmp_path / "none.pt", synth_dataset, tmp_path / "o")) == 2
    assert "does not exist" in capsys.readouterr().err
    used = tmp_path / "used"
    used.mkdir()
    (used / "student.pt").write_bytes(b"x")
    assert main(args(teacher_ckpt, synth_dataset, used)) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_every_flag_lands_in_its_config_field():
    from compressor.cli.compress import build_parser, config_from_args

    argv = [
        "--teacher",
        "t.pt",
        "--data",
        "d",
        "-o",
        "o",
        "--imgsz",
        "192",
        "320",
        "--ratio",
        "0.3",
        "--target",
        "flops",
        "--importance",
        "tci_gcp",
        "--calib-batches",
        "4",
        "--calib-batch",
        "3",
        "--normalize",
        "max",
        "--aggregate",
        "weighted",
        "--task-weight",
        "det=2",
        "--task-weight",
        "lane=0.5",
        "--conflict-lambda",
        "0.7",
        "--conflict-mode",
        "additive",
        "--group-rescale",
        "none",
        "--safe-top-q",
        "0.2",
        "--round-to",
        "16",
        "--min-width",
        "16",
        "--protect",
        "a.b",
        "--protect",
        "c",
        "--no-protect-outputs",
        "--iterative-steps",
        "2",
        "--step-epochs",
        "0",
        "--flops-imgsz",
        "192",
        "320",
        "--no-kd",
        "--taps",
        "neck_s8",
        "--kd-loss",
        "cosine",
        "--kd-weight",
        "0.5",
        "--no-kd-normalize",
        "--no-adapter-bn",
        "--adapter-init",
        "random",
        "--epochs",
        "3",
        "--batch",
        "4",
        "--lr",
        "0.002",
        "--optimizer",
        "sgd",
        "--max-train-images",
        "10",
        "--max-val-images",
        "5",
        "--det-mode",
        "both",
        "--seg-mode",
        "per_batch",
        "--val-lane-labels",
        "wide",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--seed",
        "3",
        "--overwrite",
        "--no-progress",
    ]
    cfg = config_from_args(build_parser().parse_args(argv))
    p, d = cfg.prune, cfg.distill
    assert (cfg.teacher, cfg.data, cfg.out, cfg.imgsz) == ("t.pt", "d", "o", (192, 320))
    assert (p.ratio, p.target, p.importance, p.calib_batches) == (0.3, "flops", "tci_gcp", 4)
    assert (p.normalize, p.aggregate, p.task_weights) == (
        "max",
        "weighted",
        (("det", 2.0), ("lane", 0.5)),
    )
    assert (p.conflict_lambda, p.conflict_mode, p.group_rescale, p.safe_top_q) == (
        0.7,
        "additive",
        "none",
        0.2,
    )
    assert (p.round_to, p.min_width, p.protected, p.protect_outputs) == (
        16,
        16,
        ("a.b", "c"),
        False,
    )
    assert (p.iterative_steps, p.flops_input_hw) == (2, (192, 320))
    assert (d.taps, d.loss, d.kd_weight, d.normalize, d.adapter_bn, d.adapter_init) == (
        ("neck_s8",),
        "cosine",
        0.5,
        False,
        False,
        "random",
    )
    assert (cfg.kd, cfg.epochs, cfg.step_epochs, cfg.batch, cfg.lr, cfg.optimizer) == (
        False,
        3,
        0,
        4,
        0.002,
        "sgd",
    )
    assert (cfg.calib_batch, cfg.max_train_images, cfg.max_val_images) == (3, 10, 5)
    assert (cfg.det_mode, cfg.seg_mode, cfg.val_lane_labels) == ("both", "per_batch", "wide")
    assert (cfg.workers, cfg.device, cfg.seed, cfg.overwrite, cfg.progress) == (
        0,
        "cpu",
        3,
        True,
        False,
    )
    defaults = config_from_args(build_parser().parse_args(argv[:6]))
    assert defaults.prune == type(p)() and defaults.distill == type(d)()


def test_iterative_steps_fine_tune_in_between(teacher_ckpt, synth_dataset, tmp_path):
    out = tmp_path / "it"
    code = main(
        args(
            teacher_ckpt,
            synth_dataset,
            out,
            "--iterative-steps",
            "2",
            "--step-epochs",
            "1",
            "--epochs",
            "0",
            "--importance",
            "tci",
        )
    )
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    steps = rep["pruning"]["steps"]
    assert [s["target_ratio"] for s in steps] == [0.2, 0.4]
    assert all(s["calib_batches"] == 2 for s in steps)  # re-calibrated on the pruned model
    assert (out / "step1" / "last.pt").is_file()  # the fine-tune between the two steps ran
    assert not (out / "step2").exists()  # ... and only between steps
    assert rep["params_reduction"] >= 0.4


def test_default_taps_per_model_and_all():
    from dataclasses import replace

    from compressor.compress import resolve_distill
    from compressor.distill import DistillConfig
    from compressor.models.registry import get_spec

    yolop = get_spec("yolop")
    assert resolve_distill(DistillConfig(), yolop).taps == yolop.taps
    assert "backbone_s8" in yolop.taps and "neck_s8" not in yolop.taps
    assert resolve_distill(DistillConfig(taps=("all",)), yolop).taps == ()
    assert resolve_distill(DistillConfig(taps=("neck_s8",)), yolop).taps == ("neck_s8",)
    assert resolve_distill(DistillConfig(), replace(yolop, taps=())).taps == ()
