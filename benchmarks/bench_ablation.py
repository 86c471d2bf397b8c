"""Ablation of the compression method on the synthetic set: importance in {random, l1,
taylor_sum, tci, tci_gcp} x {no KD, KD}, same teacher, same parameter ratio, same seeds, same
epochs. Each run is one `compress()` (calibrate -> prune -> fine-tune or distil -> evaluate
teacher and student on the val split); the student and the teacher are then also scored on a
held-out split that nothing was tuned on (the teacher's best epoch and the default KD taps were
both chosen by val numbers). Prints tables of deltas vs the teacher (points, mean +- std over
seeds) and writes benchmarks/results/ablation.json.

Targets (METHOD.md) for tci_gcp + KD at >= 40% fewer parameters: mAP50 and recall within 1.0
point of the teacher, drivable mIoU within 0.5, lane IoU within 1.0, and a mean task delta
at least as good as every baseline. The synthetic set says nothing about BDD100K accuracy.

    PYTHONPATH=. python benchmarks/bench_ablation.py --teacher out/bench_teacher/best.pt \\
        --data out/bench_teacher_data --epochs 8 --seeds 0 1 2
    PYTHONPATH=. python benchmarks/bench_ablation.py --epochs 1 --importances tci_gcp l1   # quick

Every finished run leaves `<out>/rows/<run>_s<seed>.json`; a rerun skips those (`--redo` to run
them again), so two processes can share the table (e.g. `--kd-modes no_kd` in one and
`--kd-modes kd` in the other, one thread each) and `--merge-only` then writes the JSON from the
row files that match the arguments. `--control` adds `teacher_finetuned`: the unpruned teacher
trained on the students' schedule, to separate the effect of the extra epochs from the
compression's (`--importances` with no names runs only that).

`--targets params flops latency --match-latency 0.3` adds the pruning target as a dimension at
the same measured latency: the latency target removes 0.3 of the teacher's measured latency (ONNX
Runtime CPU, one thread, interleaved with the teacher), and the params and FLOPs ratios are found
by bisection (prune only, timed the same way) so that their students measure as fast; then every
target's student is distilled on the same schedule and scored on val and the held-out split:
which target keeps the most accuracy for the same speed.

    PYTHONPATH=. python benchmarks/bench_ablation.py --teacher demo_out/teacher/best.pt \
        --data demo_out/data --importances tci_gcp --kd-modes kd --seeds 0 1 2 \
        --targets params flops latency --match-latency 0.3 --tag _targets
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from compressor.checkpoint import load_checkpoint
from compressor.compress import CompressConfig, compress, finetune_config
from compressor.data import BddDataset, DataConfig, make_loader
from compressor.data.synth import SynthConfig, generate
from compressor.distill import DistillConfig
from compressor.latency.config import LatencyConfig
from compressor.pruning import PruneConfig, list_importances
from compressor.train import TrainConfig, train
from compressor.train.evaluate import EvalConfig, evaluate, summarize

ROOT = Path(__file__).resolve().parents[1]
HEAD = ("det_map50", "drivable_miou", "lane_iou")  # one headline metric per task
COLUMNS = ("det_map50", "det_recall", "drivable_miou", "lane_iou")
TARGETS = {"det_map50": -1.0, "det_recall": -1.0, "drivable_miou": -0.5, "lane_iou": -1.0}
SPLITS = ("val", "holdout")
CONTROL = "teacher_finetuned"  # not a baseline: the unpruned teacher on the students' schedule


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, default=None, help="default: train one")
    p.add_argument("--teacher-epochs", type=int, default=15)
    p.add_argument("--data", type=Path, default=ROOT / "out" / "bench_teacher_data")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-val", type=int, default=60)
    p.add_argument("--holdout", type=Path, default=ROOT / "out" / "bench_holdout_data")
    p.add_argument("--n-holdout", type=int, default=200)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_ablation")
    p.add_argument("--imgsz", type=int, nargs=2, default=(192, 320))
    p.add_argument("--ratio", type=float, default=0.4)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--importances", nargs="*", default=list_importances())
    p.add_argument("--kd-modes", nargs="+", default=["no_kd", "kd"], choices=["no_kd", "kd"])
    p.add_argument("--kd-weight", type=float, default=None, help="default: DistillConfig's")
    p.add_argument("--kd-loss", default=None, help="default: DistillConfig's")
    p.add_argument("--taps", nargs="+", default=None, help="default: the model's default taps")
    p.add_argument("--tag", default="", help="suffix of the run names (variants of a setting)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--control", action="store_true", help="add the teacher_finetuned row")
    p.add_argument(
        "--targets",
        nargs="+",
        default=["params"],
        choices=["params", "flops", "latency"],
        help="pruning targets (a dimension of the table); with --match-latency the ratios of "
        "params and flops are searched to give the latency target's measured speed",
    )
    p.add_argument(
        "--match-latency",
        type=float,
        default=None,
        help="latency ratio R: compare targets at the student latency of --target latency "
        "--ratio R (default: every target at --ratio)",
    )
    p.add_argument("--redo", action="store_true", help="rerun rows that already have a file")
    p.add_argument("--merge-only", action="store_true", help="only merge existing row files")
    p.add_argument("--workers", type=int, default=1)
    # one thread: on a shared 2-core machine two OpenMP threads can run 10-60x slower
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "ablation.json")
    return p.parse_args()


def ensure_data(args: argparse.Namespace) -> None:
    if not (args.data / "images" / "val").is_dir():
        generate(
            SynthConfig(out=args.data, n_train=args.n_train, n_val=args.n_val, seed=0),
            progress=True,
        )
    if not (args.holdout / "images" / "val").is_dir():  # another seed: unseen scenes
        generate(
            SynthConfig(out=args.holdout, n_train=0, n_val=args.n_holdout, seed=1_000_003),
            progress=True,
        )


def ensure_teacher(args: argparse.Namespace) -> Path:
    """A private copy of the given teacher (so nothing rewrites it mid-run), or a new one."""
    dst = args.out / "teacher.pt"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.teacher is not None:
        if not dst.is_file() or dst.read_bytes() != args.teacher.read_bytes():
            tmp = dst.with_suffix(f".{os.getpid()}.tmp")  # two processes may share the table
            shutil.copyfile(args.teacher, tmp)
            tmp.replace(dst)
        return dst
    if not dst.is_file():
        res = train(
            TrainConfig(
                data=str(args.data),
                out=str(args.out / "teacher_run"),
                width=0.25,
                depth=0.33,
                imgsz=tuple(args.imgsz),
                epochs=args.teacher_epochs,
                batch=args.batch,
                workers=args.workers,
                seed=0,
                overwrite=True,
            )
        )
        shutil.copyfile(res.best or res.last, dst)
    return dst


def scorer(args, root: Path, lane_labels: str = "thin") -> Callable[[nn.Module], dict]:
    """model -> headline metrics on `root`'s val split; the loader is built once and reused."""
    data = DataConfig(input_hw=tuple(args.imgsz), lane_labels=lane_labels)
    loader = make_loader(BddDataset(root, "val", data), args.batch, shuffle=False, workers=0)
    ecfg = EvalConfig(progress=False)
    return lambda model: summarize(evaluate(model, loader, ecfg), ecfg.det_mode)


def deltas(student: dict, teacher: dict) -> dict:
    d = {k: round(100 * (student[k] - teacher[k]), 3) for k in COLUMNS}
    d["mean_task"] = round(sum(d[k] for k in HEAD) / len(HEAD), 3)
    return d


def compress_config(
    args,
    teacher: Path,
    importance: str,
    kd: bool,
    seed: int,
    name: str,
    target: str = "params",
    ratio: float | None = None,
    epochs: int | None = None,
):
    kd_opts = {"kd_weight": args.kd_weight, "loss": args.kd_loss, "taps": args.taps}
    return CompressConfig(
        teacher=str(teacher),
        data=str(args.data),
        out=str(args.out / f"{name}_s{seed}"),
        imgsz=tuple(args.imgsz),
        kd=kd,
        epochs=args.epochs if epochs is None else epochs,
        lr=args.lr,
        batch=args.batch,
        prune=PruneConfig(
            ratio=args.ratio if ratio is None else ratio,
            target=target,
            importance=importance,
            calib_batches=args.calib_batches,
            # the plan is a function of the (cached) table: the same student for every seed's
            # comparison, and the params/FLOPs search below compares against a fixed target
            latency_rounds=0,
            seed=seed,
        ),
        latency=LatencyConfig(cache_dir=str(args.out / "cache")),
        distill=DistillConfig(**{k: v for k, v in kd_opts.items() if v is not None}),
        workers=args.workers,
        seed=seed,
        overwrite=True,
        progress=False,
    )


def make_row(run: str, seed: int, importance: str, kd: bool, sizes: dict, student, teacher, t0):
    """One run's record; `student` / `teacher` are {split: metrics} for val and holdout."""
    return {
        "run": run,
        "seed": seed,
        "importance": importance,
        "kd": kd,
        "target": sizes.get("target", "params"),
        "ratio": sizes.get("ratio"),
        **sizes,
        "deltas_points": {s: deltas(student[s], teacher[s]) for s in SPLITS},
        "student_metrics": student,
        "teacher_metrics": teacher,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def run_name(args, importance: str, kd: bool, target: str) -> str:
    where = "" if args.targets == ["params"] else f"_{target}"
    return f"{importance}{'_kd' if kd else ''}{where}{args.tag}"


def student_speed(rep: dict) -> float | None:
    """Measured student / teacher latency of a compress report (interleaved, ORT CPU)."""
    m = (rep.get("latency") or {}).get("measured")
    return m["student_over_teacher"] if m else None


def matched_ratios(args, teacher: Path) -> dict[str, dict]:
    """{target: {"ratio", "measured"}}: the latency target at --match-latency, and for params /
    FLOPs the ratio whose pruned (not yet trained) student measures as fast, by bisection on
    prune-only runs (epochs 0; the same importance and seed 0). Cached in <out>/matched.json."""
    cache = args.out / "matched.json"
    if cache.is_file():
        got = json.loads(cache.read_text())
        if got.get("match_latency") == args.match_latency and set(args.targets) <= set(
            got["ratios"]
        ):
            return got["ratios"]
    imp = args.importances[0]

    def speed(target: str, ratio: float) -> float:
        cfg = compress_config(
            args, teacher, imp, False, 0, f"match_{target}_{ratio:.4f}", target, ratio, 0
        )
        cfg = replace(cfg, max_val_images=2)
        speed = student_speed(compress(cfg).report)
        assert speed is not None, "latency not measured: ONNX Runtime CPU is needed here"
        print(f"  match: {target} ratio {ratio:.3f} -> {speed:.3f}x the teacher", flush=True)
        return speed

    goal = speed("latency", args.match_latency)
    ratios = {"latency": {"ratio": args.match_latency, "measured": goal}}
    for target in [t for t in args.targets if t != "latency"]:
        lo, hi, best = 0.02, 0.9, (1.0, 1.0)
        for _ in range(7):
            mid = (lo + hi) / 2
            got = speed(target, mid)
            if abs(got - goal) < abs(best[1] - goal):
                best = (mid, got)
            if abs(got - goal) <= 0.015:
                break
            lo, hi = (mid, hi) if got > goal else (lo, mid)
        ratios[target] = {"ratio": round(best[0], 4), "measured": best[1]}
    cache.write_text(json.dumps({"match_latency": args.match_latency, "ratios": ratios}, indent=2))
    return ratios


def run_one(
    args, teacher: Path, score_holdout, teacher_holdout: dict, importance, kd, seed, target, ratio
):
    name = run_name(args, importance, kd, target)
    cfg = compress_config(args, teacher, importance, kd, seed, name, target, ratio)
    t0 = time.perf_counter()
    res = compress(cfg)
    rep = res.report
    sizes = {
        "params_reduction": rep["params_reduction"],
        "flops_reduction": rep["flops_reduction"],
        "kd_taps": [t["name"] for t in rep["training"].get("taps", [])],
        "target": target,
        "ratio": cfg.prune.ratio,
        "student_over_teacher_latency": student_speed(rep),
    }
    student = {"val": rep["student"]["metrics"], "holdout": score_holdout(res.student)}
    teacher_m = {"val": rep["teacher"]["metrics"], "holdout": teacher_holdout}
    return make_row(name, seed, importance, kd, sizes, student, teacher_m, t0)


def run_control(args, teacher: Path, score_holdout, teacher_holdout: dict, seed: int) -> dict:
    """The unpruned teacher trained on the students' schedule (same epochs, lr, seed, data
    order): how much of a student's delta is the extra training rather than the compression."""
    t0 = time.perf_counter()
    cfg = compress_config(args, teacher, "random", False, seed, CONTROL)
    model, _ = load_checkpoint(teacher)
    score_val = scorer(args, args.data, cfg.val_lane_labels)
    teacher_val = score_val(model)
    tcfg = finetune_config(cfg, tuple(args.imgsz), Path(cfg.out) / "train", args.epochs)
    tuned = train(tcfg, model=model).deploy_model
    sizes = {"params_reduction": 0.0, "flops_reduction": 0.0, "kd_taps": []}
    student = {"val": score_val(tuned), "holdout": score_holdout(tuned)}
    teacher_m = {"val": teacher_val, "holdout": teacher_holdout}
    return make_row(CONTROL, seed, "none", False, sizes, student, teacher_m, t0)


def row_path(args, name: str, seed: int) -> Path:
    return args.out / "rows" / f"{name}_s{seed}.json"


def planned(args) -> list[tuple[str, bool, int, str]]:
    runs = [
        (imp, mode == "kd", seed, target)
        for target in args.targets
        for imp in args.importances
        for mode in args.kd_modes
        for seed in args.seeds
    ]
    return runs + [(CONTROL, False, seed, "none") for seed in args.seeds if args.control]


def add_control_deltas(rows: list[dict]) -> list[dict]:
    """Copies of the rows with `<split>_vs_control` deltas: student minus the control of the same
    seed (same data order), i.e. what the compression costs against a teacher trained as long."""
    controls = {r["seed"]: r for r in rows if r["run"] == CONTROL}
    out = []
    for r in rows:
        c = controls.get(r["seed"])
        if c is None or r["run"] == CONTROL:
            out.append(r)
            continue
        d = dict(r["deltas_points"])
        for split in SPLITS:
            mine, ref = r["deltas_points"][split], c["deltas_points"][split]
            d[f"{split}_vs_control"] = {k: round(mine[k] - ref[k], 3) for k in mine}
        out.append({**r, "deltas_points": d})
    return out


def views_of(lines: list[dict]) -> list[str]:
    names = [*SPLITS, *(f"{s}_vs_control" for s in SPLITS)]
    return [v for v in names if any(v in line for line in lines)]


def aggregate(rows: list[dict]) -> list[dict]:
    """One line per run name: mean and (with >1 seed) sample std of every delta, per view (a
    split vs the teacher, or vs the control where there is one)."""
    rows = add_control_deltas(rows)
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        by_name.setdefault(r["run"], []).append(r)
    out = []
    for name, rs in by_name.items():
        line = {
            "run": name,
            "importance": rs[0]["importance"],
            "kd": rs[0]["kd"],
            "seeds": sorted(r["seed"] for r in rs),
            "target": rs[0].get("target", "params"),
            "ratio": rs[0].get("ratio"),
            "params_reduction": min(r["params_reduction"] for r in rs),
            "flops_reduction": statistics.fmean(r["flops_reduction"] for r in rs),
            "student_over_teacher_latency": _mean_or_none(
                [r.get("student_over_teacher_latency") for r in rs]
            ),
        }
        views = set.intersection(*(set(r["deltas_points"]) for r in rs))
        for split in sorted(views):
            keys = rs[0]["deltas_points"][split]
            vals = {k: [r["deltas_points"][split][k] for r in rs] for k in keys}
            line[split] = {
                k: {
                    "mean": round(statistics.fmean(v), 3),
                    "std": round(statistics.stdev(v), 3) if len(v) > 1 else None,
                }
                for k, v in vals.items()
            }
        out.append(line)
    return out


def _mean_or_none(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.fmean(vals), 4) if vals else None


def table(lines: list[dict], split: str) -> str:
    head = (
        "| run | params | GFLOPs | latency x | d mAP50 | d recall | d DA mIoU | d LL IoU | "
        "mean task d |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )

    def cell(s: dict) -> str:
        return f"{s['mean']:+.2f}" + (f" ± {s['std']:.2f}" if s["std"] is not None else "")

    out = [head]
    for r in lines:
        if split not in r:
            continue
        d = r[split]
        lat = r.get("student_over_teacher_latency")
        out.append(
            f"| {r['run']} | {-r['params_reduction']:+.1%} | {-r['flops_reduction']:+.1%} | "
            + (f"{lat:.3f}" if lat is not None else "-")
            + " | "
            + " | ".join(cell(d[k]) for k in (*COLUMNS, "mean_task"))
            + " |"
        )
    return "\n".join(out)


def check_targets(lines: list[dict], ratio: float, split: str) -> dict:
    """On the seed means: tci_gcp + KD within the per-metric limits and best on mean task."""
    ours = next((r for r in lines if r["importance"] == "tci_gcp" and r["kd"]), None)
    if ours is None or split not in ours:
        return {"evaluated": False}
    per_metric = {k: ours[split][k]["mean"] >= lim for k, lim in TARGETS.items()}
    others = [r for r in lines if r is not ours and split in r and r["run"] != CONTROL]
    best = all(ours[split]["mean_task"]["mean"] >= r[split]["mean_task"]["mean"] for r in others)
    ratio_met = ours["params_reduction"] >= ratio
    return {
        "evaluated": True,
        "ratio_met": ratio_met,
        "within_limits": per_metric,
        "best_mean_task_delta": best,
        "all_met": all(per_metric.values()) and best and ratio_met,
    }


def compare_targets(lines: list[dict], split: str) -> dict:
    """Per pruning target (runs of one importance/KD setting): the seed-mean task deltas and
    measured latency, and which target kept the most accuracy (best mean task delta)."""
    per = {
        r["target"]: {
            "run": r["run"],
            "student_over_teacher_latency": r.get("student_over_teacher_latency"),
            "mean_task": r[split]["mean_task"]["mean"],
            **{k: r[split][k]["mean"] for k in COLUMNS},
        }
        for r in lines
        if split in r and r["run"] != CONTROL and "target" in r
    }
    if len(per) < 2:
        return {"compared": False, "targets": per}
    best = max(per, key=lambda t: per[t]["mean_task"])
    return {"compared": True, "targets": per, "most_accuracy_kept": best}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    ensure_data(args)
    teacher = ensure_teacher(args)
    score_holdout = scorer(args, args.holdout)
    teacher_holdout = score_holdout(load_checkpoint(teacher)[0])
    ratios = (
        matched_ratios(args, teacher)
        if args.match_latency is not None
        else {t: {"ratio": args.ratio} for t in args.targets}
    )
    rows = []
    for importance, kd, seed, target in planned(args):
        name = CONTROL if importance == CONTROL else run_name(args, importance, kd, target)
        path = row_path(args, name, seed)
        if path.is_file() and not args.redo:
            rows.append(json.loads(path.read_text()))
            continue
        if args.merge_only:
            print(f"missing: {path.name}", flush=True)
            continue
        if importance == CONTROL:
            row = run_control(args, teacher, score_holdout, teacher_holdout, seed)
        else:
            ratio = ratios[target]["ratio"]
            row = run_one(
                args, teacher, score_holdout, teacher_holdout, importance, kd, seed, target, ratio
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=2) + "\n")
        tmp.replace(path)
        rows.append(row)
        d = row["deltas_points"]
        print(
            f"{row['run']} seed {seed}: mean task delta val {d['val']['mean_task']:+.2f}, "
            f"holdout {d['holdout']['mean_task']:+.2f} points ({row['seconds']:.0f} s)",
            flush=True,
        )
    lines = aggregate(rows)
    result = {
        "data": str(args.data),
        "holdout": str(args.holdout),
        "teacher": str(args.teacher or teacher),
        "imgsz": list(args.imgsz),
        "ratio": args.ratio,
        "pruning_targets": args.targets,
        "match_latency": args.match_latency,
        "matched_ratios": ratios,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch": args.batch,
        "calib_batches": args.calib_batches,
        "kd": {"kd_weight": args.kd_weight, "loss": args.kd_loss, "taps": args.taps},
        "seeds": args.seeds,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "teacher_metrics": rows[0]["teacher_metrics"] if rows else {},
        "mean_task_delta_of": list(HEAD),
        "summary": lines,
        "runs": rows,
        "targets": {v: check_targets(lines, args.ratio, v) for v in views_of(lines)},
        "by_pruning_target": {v: compare_targets(lines, v) for v in views_of(lines)},
    }
    for split in views_of(lines):
        print(f"\n{split} (deltas in points, mean ± std over seeds {args.seeds}):")
        print(table(lines, split))
        print(f"targets for tci_gcp + KD on {split}: {json.dumps(result['targets'][split])}")
        cmp = result["by_pruning_target"][split]
        if cmp["compared"]:
            print(f"most accuracy kept at the same measured latency: {cmp['most_accuracy_kept']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
