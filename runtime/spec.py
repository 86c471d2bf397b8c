"""Names and constants every stage agrees on. Defined once: the same strings are model output
keys, ONNX output names, runtime result keys and report labels."""

from __future__ import annotations

TASK_DET = "det"
TASK_DRIVABLE = "drivable"
TASK_LANE = "lane"
TASKS: tuple[str, ...] = (TASK_DET, TASK_DRIVABLE, TASK_LANE)
SEG_TASKS: tuple[str, ...] = (TASK_DRIVABLE, TASK_LANE)

# Detection after the class merge (METHOD.md, "Evaluation protocol").
DET_CLASSES: tuple[str, ...] = ("vehicle",)
# BDD100K categories merged into `vehicle`; every other category is dropped.
VEHICLE_CATEGORIES: frozenset[str] = frozenset({"car", "bus", "truck", "train"})

# Preprocessing of the YOLOP protocol: RGB, letterbox to 640x384, ImageNet mean/std.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEFAULT_INPUT_HW: tuple[int, int] = (384, 640)
PAD_VALUE = 114  # letterbox fill, per channel, in 0..255 image units

# Detection post-processing defaults of the evaluation protocol (mtc-eval, metrics): keep nearly
# every candidate so that precision/recall curves reach low scores.
NMS_CONF = 0.001
NMS_IOU = 0.6
NMS_MAX_DET = 300

# Deploy defaults (mtc-run, runtime.run): what a vehicle acts on, like other detectors' predict
# modes. DEPLOY_TOPK bounds the candidates that reach NMS per image (EfficientNMS's topK), so the
# worst frame (every anchor above the threshold) costs what a typical one costs.
DEPLOY_CONF = 0.25
DEPLOY_IOU = 0.45
DEPLOY_MAX_DET = 100
DEPLOY_TOPK = 1000
