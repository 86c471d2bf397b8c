"""Speed of the `coco` detection mode against pycocotools on the same detections, one run.

10,000 images, 5-15 gts each (~10), 0-300 predictions each: jittered copies of gts plus random
boxes, random scores. Timed: ours = every `update` + `compute` (coco mode); pycocotools =
`evaluate` + `accumulate` with the same work (areaRng 'all' only, maxDets [300], the same IoU
thresholds); `summarize` is not timed (its mAP is read from `eval['precision']`), and building the
COCO objects / `loadRes` is timed separately as input conversion. The two mAPs must agree to 1e-9.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_metrics.py [--images 10000] [--max-preds 300]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import time
from pathlib import Path

import numpy as np

from runtime.metrics import DetectionEvaluator

RESULTS = Path(__file__).parent / "results" / "metrics_speed.json"
Image = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def make_images(n: int, max_preds: int, seed: int) -> list[Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        g = int(rng.integers(5, 16))
        xy = rng.uniform(0, 1100, (g, 2))
        gt = np.concatenate([xy, xy + rng.uniform(10, 180, (g, 2))], 1)
        p = int(rng.integers(0, max_preds + 1))
        n_jit = min(p, 3 * g)
        jit = gt[rng.integers(0, g, n_jit)] + rng.normal(0, 6, (n_jit, 4))
        xy = rng.uniform(0, 1100, (p - n_jit, 2))
        rand = np.concatenate([xy, xy + rng.uniform(10, 180, (p - n_jit, 2))], 1)
        pred = np.concatenate([jit, rand])
        pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2])
        out.append((pred, rng.random(p), np.zeros(p, np.int64), gt, np.zeros(g, np.int64)))
    return out


def run_ours(images: list[Image], mode: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    ev = DetectionEvaluator(mode, max_det=300)
    for im in images:
        ev.update(*im)
    res = ev.compute()
    return time.perf_counter() - t0, res


def run_pycocotools(
    images: list[Image], thresholds: np.ndarray
) -> tuple[float, float, float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    t0 = time.perf_counter()
    anns, dets = [], []
    for i, (pb, ps, pc, gb, gc) in enumerate(images):
        for b, c in zip(gb.tolist(), gc.tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": c + 1,
                    "bbox": [b[0], b[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for b, s, c in zip(pb.tolist(), ps.tolist(), pc.tolist()):
            dets.append(
                {
                    "image_id": i + 1,
                    "category_id": c + 1,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "score": s,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i + 1} for i in range(len(images))],
            "annotations": anns,
            "categories": [{"id": 1, "name": "vehicle"}],
        }
        gt.createIndex()
        dt = gt.loadRes(dets)
        t1 = time.perf_counter()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.iouThrs = thresholds
        ev.params.maxDets = [300]
        ev.params.areaRng, ev.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        ev.evaluate()
        ev.accumulate()
        t2 = time.perf_counter()
    prec = ev.eval["precision"][:, :, :, 0, 0]  # what summarize averages
    map50_95 = float(prec[prec > -1].mean())
    p50 = prec[0]
    return t1 - t0, t2 - t1, map50_95, float(p50[p50 > -1].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--max-preds", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    images = make_images(args.images, args.max_preds, args.seed)
    n_pred = sum(len(im[1]) for im in images)
    n_gt = sum(len(im[4]) for im in images)
    t_coco, ours = run_ours(images, "coco")
    t_yolop, _ = run_ours(images, "yolop")
    t_conv, t_pycoco, ref_map, ref_map50 = run_pycocotools(images, np.array(ours["iou_thresholds"]))
    d_map, d_map50 = abs(ours["map50_95"] - ref_map), abs(ours["map50"] - ref_map50)
    rows = [
        ("ours coco (update+compute)", t_coco),
        ("ours yolop (update+compute)", t_yolop),
        ("pycocotools evaluate+accumulate", t_pycoco),
        ("pycocotools COCO()+loadRes (not compared)", t_conv),
    ]
    print(f"{args.images} images, {n_gt} gts, {n_pred} predictions (max {args.max_preds}/image)")
    print(f"{'what':<44}{'seconds':>10}")
    for name, sec in rows:
        print(f"{name:<44}{sec:>10.2f}")
    print(f"speed-up coco vs pycocotools: {t_pycoco / t_coco:.1f}x")
    print(f"mAP50:95 ours {ours['map50_95']:.12f} pycocotools {ref_map:.12f} |diff| {d_map:.1e}")
    print(f"mAP50    ours {ours['map50']:.12f} pycocotools {ref_map50:.12f} |diff| {d_map50:.1e}")
    result = {
        "images": args.images,
        "gts": n_gt,
        "predictions": n_pred,
        "max_preds": args.max_preds,
        "seed": args.seed,
        "ours_coco_s": t_coco,
        "ours_yolop_s": t_yolop,
        "pycocotools_evaluate_accumulate_s": t_pycoco,
        "pycocotools_input_conversion_s": t_conv,
        "pycocotools_summarize_timed": False,
        "speedup": t_pycoco / t_coco,
        "map50_95": {"ours": ours["map50_95"], "pycocotools": ref_map, "abs_diff": d_map},
        "map50": {"ours": ours["map50"], "pycocotools": ref_map50, "abs_diff": d_map50},
        "agree_1e-9": bool(d_map < 1e-9 and d_map50 < 1e-9),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    if not result["agree_1e-9"]:
        raise SystemExit("mAP disagrees with pycocotools by more than 1e-9")


if __name__ == "__main__":
    main()
