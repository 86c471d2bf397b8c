"""The export's INT8 stage: calibrate on the data set's train split, quantise, and guard every
task against the FP32 export on its val split (`export.int8.guard`). Writes nothing: the write
stage stages `<name>_int8.onnx`, its sidecar (with the `int8` block) and the calibration cache.

When no layer choice meets the budgets the stage records why (`run.int8_error`), the other
artifacts are written as usual and `export_model` raises `Int8Error` at the end, so the user
keeps the FP32 / FP16 export and the command exits non-zero."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import onnx

from export.config import Int8Options
from export.int8.calibrate import (
    AUTO,
    AUTO_CANDIDATES,
    Candidate,
    collect_candidates,
    load_calibration_images,
)
from export.int8.cost import conv_flops
from export.int8.guard import (
    DEFAULT_BUDGETS,
    GuardResult,
    Int8Search,
    deltas,
    layer_groups,
    over_budget,
)
from export.int8.qdq import QuantLayer, insert_qdq, quantizable_layers
from export.run import ExportRun
from runtime.io_names import INPUT_NAME
from runtime.sidecar import Int8Info, Sidecar


def check_inputs(run: ExportRun) -> None:
    """Right after loading the model, before any export work: the calibration and guard data
    exist and fit the model (input size, layout, enough images)."""
    c = run.cfg.int8
    if not c.enabled:
        return
    from export.int8.calibrate import check_calibration_source, count_split_images

    check_calibration_source(c.calib_data, run.plan.imgsz, c.calib_batch, c.calib_split)  # type: ignore[arg-type]
    if c.guard:
        flag = "--guard-data" if c.guard_data else "--calib-data"
        count_split_images(Path(c.guard_root), c.guard_split, flag)  # type: ignore[arg-type]


def to_int8(run: ExportRun) -> None:
    c = run.cfg.int8
    if not c.enabled:
        return
    start = time.perf_counter()
    progress = run.cfg.output.progress
    from export.sidecars import make_sidecar, preprocess_for

    pre = preprocess_for(run.loaded, run.plan.imgsz)
    calib = load_calibration_images(
        str(c.calib_data),
        pre,
        c.calib_images,
        c.calib_batch,
        c.calib_split,
        progress,
    )
    layers = quantizable_layers(run.fp32)
    flops = conv_flops(run.fp32)
    groups = layer_groups(layers, c.group_size)
    exclude = _resolve_exclude(c.exclude, layers, groups)
    acts = sorted({q.activation for q in layers})
    candidates = (
        AUTO_CANDIDATES if c.calibration == AUTO else (Candidate.of(c.calibration, c.percentile),)
    )
    ranges = collect_candidates(
        run.fp32, acts, calib, candidates, c.calib_batch, _threads(), progress
    )
    budgets = _budgets(c)
    searchable = {g: n for g, n in groups.items() if not set(n) <= set(exclude)}
    result: GuardResult | None = None
    scores: dict[str, Any] = {}
    trials: list[dict[str, Any]] = []
    if c.guard:
        from export.stages import graph_facts

        with tempfile.TemporaryDirectory(prefix="mtc-int8-") as tmp:
            ref_path = Path(tmp) / f"{run.plan.name}.onnx"
            ref_path.write_bytes(run.fp32.SerializeToString())
            sidecar = make_sidecar(ref_path, "fp32", run.loaded, run.plan.spec, graph_facts(run))
        scorer, proxy, measure, evalset = _scorer(c, sidecar, pre, progress, run.fp32, budgets)
        scores["fp32"] = scorer(run.fp32)
        if run.fp16 is not None:
            scores["fp16"] = scorer(run.fp16)
        guard_images = len(evalset)
        fp16_over = _fp16_over(scores, budgets)
        if fp16_over:  # fallback layers run in FP16 on the engine: no choice can do better
            run.int8_error = fp16_over
            run.summary.int8 = {"error": fp16_over, "scores": scores, "budgets_points": budgets}
            return
        chosen, all_int8 = 0, None
        if len(candidates) > 1:
            chosen, trials, all_int8 = _choose_calibration(
                run.fp32, candidates, ranges, exclude, measure, scores["fp32"], budgets
            )
        amax = ranges[chosen]
        cost = {g: sum(flops.get(n, 0.0) for n in nodes) for g, nodes in searchable.items()}
        search = Int8Search(
            run.fp32,
            amax,
            searchable,
            scorer,
            budgets,
            exclude=exclude,
            progress=progress,
            proxy=proxy,
            cost=cost,
        )
        result = search.run(scores["fp32"], all_int8)
        model, quantized = result.model, result.layers
        scores["int8"] = result.summary
    else:
        chosen, amax = 0, ranges[0]
        model, quantized = insert_qdq(run.fp32, amax, exclude)
        guard_images = 0
    # the calibration cache also scales the network input (TensorRT's implicit quantisation)
    run.int8_amax = {INPUT_NAME: float(abs(calib.images).max()), **amax}
    run.int8 = model
    run.int8_info, run.summary.int8 = _describe(
        run,
        c,
        candidates[chosen],
        trials,
        flops=flops,
        calib_n=len(calib.images),
        layers=layers,
        quantized=quantized,
        groups=groups,
        exclude=exclude,
        result=result,
        scores=scores,
        budgets=budgets,
        guard_images=guard_images,
    )
    run.summary.int8["time_s"] = round(time.perf_counter() - start, 2)
    from export.stages import lint_model

    lint_model(run, model, "int8", run.int8_path().name)
    if result is not None and over_budget(result.deltas, budgets):
        run.int8_error = _impossible_text(result, budgets)
        run.int8 = None


def _choose_calibration(
    fp32: onnx.ModelProto,
    candidates: tuple[Candidate, ...],
    ranges: list[dict[str, float]],
    exclude: list[str],
    measure: Callable[[onnx.ModelProto], tuple[dict, dict]],
    ref: dict,
    budgets: dict[str, float],
) -> tuple[int, list[dict[str, Any]], dict]:
    """`--calibration auto`: quantise everything with each candidate's ranges; among those whose
    all-INT8 model already meets every budget (then nothing needs to fall back), or among all
    when none does, keep the one whose outputs disagree least with the FP32 export's. Each
    guarded metric's disagreement (its task's) is divided by its mean over the candidates, so
    every metric weighs the same whatever its task's scale; the task metrics decide only whether
    a candidate needs no search at all (a few dozen frames' mAP moves by points between
    near-equal candidates, too much to rank them by). `measure`: model -> (evaluation summary,
    disagreement). Returns the chosen index, the trials and the chosen all-INT8 summary."""
    rows, summaries = [], []
    for cand, amax in zip(candidates, ranges):
        summary, d = measure(insert_qdq(fp32, amax, exclude)[0])
        summaries.append(summary)
        rows.append((cand, d, deltas(summary, ref, list(budgets))))
    keys = sorted({k for _, d, _ in rows for k in d})
    mean = {k: sum(d.get(k, 0.0) for _, d, _ in rows) / len(rows) for k in keys}
    rel = [sum(d.get(k, 0.0) / mean[k] for k in keys if mean[k] > 0) for _, d, _ in rows]
    within = [i for i, (_, _, dl) in enumerate(rows) if not over_budget(dl, budgets)]
    chosen = min(within or range(len(rows)), key=lambda i: rel[i])
    trials = [
        {
            "calibration": str(cand),
            "disagreement": {k: round(v, 5) for k, v in d.items()},
            "relative": round(rel[i], 4),
            "within_budget": i in within,
            "all_int8_deltas": {k: round(v, 3) for k, v in dl.items()},
            "chosen": i == chosen,
        }
        for i, (cand, d, dl) in enumerate(rows)
    ]
    return chosen, trials, summaries[chosen]


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _budgets(c: Int8Options) -> dict[str, float]:
    """Guarded metric -> points; Int8Budgets' fields are the evaluation summary's keys."""
    return asdict(c.budgets)


def _scorer(
    c: Int8Options,
    sidecar: Sidecar,
    pre: Any,
    progress: bool,
    fp32: onnx.ModelProto,
    budgets: dict[str, float],
):
    """The guard's two measures on its images: the task metrics (acceptance) and the per-task
    disagreement with the FP32 export (ranking), the latter keyed by the guarded metrics of
    each task; and both from one inference pass (`measure`)."""
    from compressor.train.agreement import Agreement
    from compressor.train.eval_artifact import batch_results, build_eval_set, score_results
    from compressor.train.evaluate import EvalConfig
    from export.checks.ort import OrtModel

    evalset = build_eval_set(
        c.guard_root,  # type: ignore[arg-type]
        c.guard_split,
        pre,
        lane_labels="thin",
        max_images=c.guard_images,
        progress=progress,
    )
    cfg = EvalConfig(progress=False)
    threads = _threads()
    batch = max(sidecar.batch.min, min(8, sidecar.batch.max))

    def results(model: onnx.ModelProto):
        return batch_results(OrtModel(model, threads=threads), evalset, sidecar, cfg, batch)

    def scorer(model: onnx.ModelProto) -> dict:
        return score_results(results(model), evalset, sidecar, cfg)["summary"]

    agreement = Agreement(OrtModel(fp32, threads=threads), evalset, sidecar, cfg, batch)
    task_of = {k: _task_of(k, agreement.tasks) for k in budgets}

    def by_metric(d: dict[str, float]) -> dict:
        return {k: d[t] for k, t in task_of.items() if t is not None}

    def proxy(model: onnx.ModelProto) -> dict:
        return by_metric(agreement(OrtModel(model, threads=threads)))

    def measure(model: onnx.ModelProto) -> tuple[dict, dict]:
        batches = list(results(model))
        summary = score_results(batches, evalset, sidecar, cfg)["summary"]
        return summary, by_metric(agreement.of_results([r for _, rs in batches for r in rs]))

    return scorer, proxy, measure, evalset


def _task_of(metric: str, tasks: tuple[str, ...]) -> str | None:
    """The task a summary metric belongs to (`lane_iou` -> `lane`): the longest task name that
    prefixes it."""
    hits = [t for t in tasks if metric.startswith(f"{t}_")]
    return max(hits, key=len) if hits else None


def _resolve_exclude(
    names: tuple[str, ...], layers: list[QuantLayer], groups: dict[str, list[str]]
) -> list[str]:
    """Layer names and group names -> layer names; an unknown name is a one-line error."""
    from export.errors import ExportConfigError

    nodes = {q.node for q in layers}
    out: list[str] = []
    for n in names:
        if n in groups:
            out += groups[n]
        elif n in nodes:
            out.append(n)
        else:
            raise ExportConfigError(
                f"--int8-exclude {n!r} is neither a quantisable layer nor a layer group of this "
                f"model; groups: {', '.join(list(groups)[:12])}{' ...' if len(groups) > 12 else ''}"
            )
    return out


def _describe(
    run: ExportRun,
    c: Int8Options,
    calibration: Candidate,
    trials: list[dict[str, Any]],
    *,
    flops: dict[str, float],
    calib_n: int,
    layers: list[QuantLayer],
    quantized: list[QuantLayer],
    groups: dict[str, list[str]],
    exclude: list[str],
    result: GuardResult | None,
    scores: dict[str, Any],
    budgets: dict[str, float],
    guard_images: int,
) -> tuple[Int8Info, dict[str, Any]]:
    q_nodes = {q.node for q in quantized}
    conv_share = len([n for n in flops if n in q_nodes]) / max(1, len(flops))
    total = sum(flops.values())
    flops_share = sum(f for n, f in flops.items() if n in q_nodes) / total if total else 0.0
    fallback_groups = list(result.fallback) if result else []
    fallback_layers = [n for g in fallback_groups for n in groups[g]] + list(exclude)
    reasons = [result.reasons.get(g, "") for g in fallback_groups] if result else []
    reasons += ["--int8-exclude"] * len(exclude)
    final = result.deltas if result else {}
    keys = list(DEFAULT_BUDGETS)
    table = {k: deltas(v, scores["fp32"], keys) for k, v in scores.items() if k != "fp32"}
    calib_cache = f"{run.plan.name}_int8.calib"
    info = Int8Info(
        calibration=calibration.method,
        calib_images=calib_n,
        percentile=calibration.percentile,
        calib_cache=calib_cache,
        quantized_ops=("Conv",),
        quantized_conv_share=round(conv_share, 4),
        quantized_flops_share=round(flops_share, 4),
        fallback=tuple(fallback_layers),
        fallback_reasons=tuple(reasons),
        deltas=tuple((k, round(v, 3)) for k, v in final.items()),
    )
    summary: dict[str, Any] = {
        "calibration": calibration.method,
        "percentile": info.percentile,
        "calibration_asked": c.calibration,
        "calibration_trials": trials,
        "calib_images": calib_n,
        "calib_source": f"{c.calib_data} ({c.calib_split})",
        "guard": c.guard,
        "guard_source": f"{c.guard_root} ({c.guard_split}, {guard_images} images)"
        if c.guard
        else None,
        "budgets_points": budgets,
        "quantized_layers": len(quantized),
        "quantizable_layers": len(layers),
        "convs": len(flops),
        "quantized_conv_share": info.quantized_conv_share,
        "quantized_flops_share": info.quantized_flops_share,
        "groups": len(groups),
        "fallback": [
            {"group": g, "layers": groups[g], "reason": result.reasons.get(g, "")}
            for g in fallback_groups
        ]
        if result
        else [],
        "excluded": list(exclude),
        "deltas": {k: round(v, 3) for k, v in final.items()},
        "all_int8_deltas": {
            k: round(v, 3) for k, v in (result.all_int8_deltas if result else {}).items()
        },
        "scores": {k: {m: v.get(m) for m in keys if m in v} for k, v in scores.items()},
        "deltas_by_export": {k: {m: round(x, 3) for m, x in d.items()} for k, d in table.items()},
        "models_scored": result.scored + len(trials) + sum(k != "int8" for k in scores)
        if result
        else 0,
        "search": [
            {
                "action": s.action,
                "group": s.group,
                "deltas": {k: round(v, 3) for k, v in s.deltas.items()},
                "ok": s.ok,
                **({"harm": {k: round(v, 5) for k, v in s.harm.items()}} if s.harm else {}),
                **({"groups_fp16": s.groups} if s.action in ("fallback", "requantize") else {}),
            }
            for s in (result.steps if result else [])
        ],
        "ranking": result.ranking if result else None,
    }
    return info, summary


def _fp16_over(scores: dict, budgets: dict[str, float]) -> str | None:
    if "fp16" not in scores:
        return None
    d16 = deltas(scores["fp16"], scores["fp32"], list(budgets))
    bad = over_budget(d16, budgets)
    if not bad:
        return None
    why = ", ".join(f"{k} {d16[k]:+.2f} (budget -{budgets[k]})" for k in bad)
    return (
        f"the INT8 budgets cannot be met even with every layer in FP16: the FP16 export already "
        f"scores {why} against the FP32 export; the FP32 and FP16 exports are kept, no INT8 "
        "ONNX is written; loosen the budgets (--int8-budget-*) or deploy FP16"
    )


def _impossible_text(result: GuardResult, budgets: dict[str, float]) -> str:
    """(An FP16 export over budget was refused before the search, by `_fp16_over`.)"""
    over = over_budget(result.deltas, budgets)
    why = ", ".join(f"{k} {result.deltas[k]:+.2f} (budget -{budgets[k]})" for k in over)
    return (
        f"no choice of INT8 layers meets the task budgets: with {len(result.fallback)} of the "
        f"groups in FP16 the INT8 ONNX still scores {why} against the FP32 export; "
        "loosen the budgets (--int8-budget-*) or deploy the FP16 export"
    )


__all__ = ["check_inputs", "to_int8"]
