"""Export options as frozen dataclasses, one section per hop (output, input, onnx, half,
tensorrt, checks). Every `mtc-export` flag is one field of a section (the CLI's FLAGS table),
and defaults are resolved in one place (`resolve_*` below), so Python and the CLI cannot drift
apart."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from export.errors import ExportConfigError
from runtime.input_size import check_input_size
from runtime.spec import NMS_CONF, NMS_IOU, NMS_MAX_DET
from runtime.tensorrt.targets import (
    DEFAULT_TARGET,
    NMS_AUTO,
    NMS_NONE,
    TRT_NMS_CHOICES,
    get_target,
    resolve_target,
    target_names,
)

SIMPLIFIERS: tuple[str, ...] = ("none", "onnxslim", "onnxsim")
INPUT_DTYPES: tuple[str, ...] = ("float32", "uint8")  # --input
ENGINES: tuple[str, ...] = ("fp16", "fp32", "int8", "none")
SEG_OUTPUT_CHOICES: tuple[str, ...] = ("argmax", "logits")
# TensorRT targets: runtime/tensorrt/targets.py. 17 is inside every target's opset range and the
# newest opset every exporter path here and onnxconverter-common handle without surprises.
DEFAULT_OPSET = 17


@dataclass(frozen=True)
class ParityTolerances:
    """FP32 ONNX Runtime vs PyTorch. Float32 rounding error grows with the magnitude of the
    activations, not with the value of one output element: on a width-0.25 YOLOP with real BN
    statistics, PyTorch FP32 itself is 9e-3 px (boxes) and 2.6e-3 (logits of magnitude ~50) away
    from a float64 run; on full-size YOLOP at 384x640 ORT vs PyTorch differ by up to 0.07 px
    (boxes up to ~300 px). So boxes and logits are compared against `atol + rtol *
    max|reference|` of that output. Scores live in [0, 1] but sit behind sigmoids of large
    logits: measured up to 5e-4, so 2e-3 (far below any threshold that matters; a wrong decode
    is off by pixels, not by these amounts). All N candidates are compared (the decode is
    bounded, every row is meaningful). Defaults leave ~4x margin over the measurements."""

    box_atol: float = 1e-4
    box_rtol: float = 5e-4
    score_atol: float = 2e-3
    logits_atol: float = 1e-4
    logits_rtol: float = 5e-4
    # An argmax pixel may flip where PyTorch's top-two logits are closer than this (abs + rel
    # to the largest |logit|): twice the logits tolerance, since both logits can move.
    mask_tie_atol: float = 1e-5
    mask_tie_rtol: float = 1e-3


@dataclass(frozen=True)
class Fp16Thresholds:
    """FP16 ONNX vs FP32 ONNX. Loose on purpose: FP16 changes numbers, not decisions."""

    min_mask_agreement_pct: float = 99.0
    min_mean_iou: float = 0.95
    max_score_delta: float = 0.05
    # Boxes compared: the top-k FP32 candidates per image (index-aligned when NMS is outside);
    # boxes under 1 px^2 are left out (their IoU is 0 even against themselves).
    topk: int = 100


@dataclass(frozen=True)
class OutputOptions:
    """Where the artifacts go. `name=None` takes the checkpoint's file stem."""

    dir: str = "export_out"
    name: str | None = None
    overwrite: bool = False  # replace an export of the same name in `dir`
    progress: bool = True

    def __post_init__(self) -> None:
        if self.name is not None and (
            not self.name or "/" in self.name or "\\" in self.name or self.name.startswith(".")
        ):
            raise ExportConfigError(
                f"--name {self.name!r} must be a plain file name (no folders, not hidden): the "
                "artifacts are written into -o as <name>.onnx etc."
            )


@dataclass(frozen=True)
class InputOptions:
    """The graph input: its size (`None`: the checkpoint's) and the batch range of its dynamic
    batch axis (the engine profile's min / opt / max, and what every sidecar states)."""

    imgsz: tuple[int, int] | None = None
    batch: int = 1
    min_batch: int = 1
    max_batch: int = 8
    # "uint8": the graph takes letterboxed uint8 NHWC BGR frames and prepares them itself
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.imgsz is not None:
            check_imgsz(self.imgsz)
        _check_choice("input", self.dtype, INPUT_DTYPES)
        if self.min_batch < 1:
            raise ExportConfigError(f"--min-batch must be >= 1, got {self.min_batch}")
        if not self.min_batch <= self.batch <= self.max_batch:
            raise ExportConfigError(
                f"batch range must satisfy min <= opt <= max, got min-batch {self.min_batch}, "
                f"batch {self.batch}, max-batch {self.max_batch}; e.g. --batch 1 --max-batch 8"
            )


@dataclass(frozen=True)
class OnnxOptions:
    """Hop 1, torch -> ONNX: the opset, what the graph outputs (NMS in the graph and its
    thresholds, argmax masks or logits) and the simplifier."""

    opset: int = DEFAULT_OPSET
    nms_in_graph: bool = False
    seg_output: str = "argmax"
    conf_thres: float = NMS_CONF
    iou_thres: float = NMS_IOU
    max_det: int = NMS_MAX_DET
    simplifier: str = "onnxslim"

    def __post_init__(self) -> None:
        _check_choice("simplifier", self.simplifier, SIMPLIFIERS)
        _check_choice("seg_output", self.seg_output, SEG_OUTPUT_CHOICES)
        if self.nms_in_graph and self.opset < 11:
            raise ExportConfigError("--nms-in-graph needs --opset >= 11 (NonMaxSuppression)")
        if not 0.0 < self.conf_thres < 1.0 or not 0.0 < self.iou_thres <= 1.0:
            raise ExportConfigError(
                f"--conf must be in (0, 1) and --iou in (0, 1], got {self.conf_thres}, "
                f"{self.iou_thres}"
            )
        if self.max_det < 1:
            raise ExportConfigError(f"--max-det must be >= 1, got {self.max_det}")


@dataclass(frozen=True)
class HalfOptions:
    """Hop 2, FP32 ONNX -> FP16 ("half") ONNX: whether to make it, and whether Resize stays FP32.
    Whether it may ship is `CheckOptions.fp16`."""

    enabled: bool = True
    keep_resize_fp32: bool = False


@dataclass(frozen=True)
class TensorRTOptions:
    """Hop 3, ONNX -> TensorRT: the engine to build (`"none"`: lint and write the build scripts
    only), the target release to lint and build for (`None`: the installed TensorRT's, else
    runtime.tensorrt.targets.DEFAULT_TARGET) and the builder settings."""

    engine: str = "fp16"
    target: str | None = None
    workspace_mib: int = 4096
    opt_level: int = 3
    timing_cache_dir: str | None = None
    dla_core: int | None = None
    nms: str = (
        NMS_NONE  # NMS appended to the engine (runtime/tensorrt/nms.py): none/auto/efficient/inms
    )
    dry_run: bool = False
    allow_lint_fail: bool = False

    def __post_init__(self) -> None:
        _check_choice("engine", self.engine, ENGINES)
        _check_choice("trt_nms", self.nms, TRT_NMS_CHOICES)
        if self.target is not None:
            _check_choice("trt_target", self.target, target_names())
        if self.workspace_mib < 1:
            raise ExportConfigError(f"--workspace must be >= 1 MiB, got {self.workspace_mib}")
        if not 0 <= self.opt_level <= 5:
            raise ExportConfigError(f"--opt-level must be in 0..5, got {self.opt_level}")
        if self.dla_core is not None and self.dla_core < 0:
            raise ExportConfigError(f"--dla-core must be >= 0, got {self.dla_core}")


@dataclass(frozen=True)
class CheckOptions:
    """What every hop must meet: parity with PyTorch, FP16 agreement with FP32 (the FP16 ONNX
    and an FP16 engine), and the largest batch the checks run."""

    parity: ParityTolerances = field(default_factory=ParityTolerances)
    fp16: Fp16Thresholds = field(default_factory=Fp16Thresholds)
    parity_batch_cap: int = 4

    def __post_init__(self) -> None:
        if self.parity_batch_cap < 1:
            raise ExportConfigError(f"parity_batch_cap must be >= 1, got {self.parity_batch_cap}")


@dataclass(frozen=True)
class Int8Budgets:
    """The most each guarded metric of the INT8 ONNX may drop below the FP32 export's, in points
    (recall, mAP50, mIoU and IoU in percent)."""

    det_recall: float = 1.0
    det_map50: float = 1.0
    drivable_miou: float = 0.5
    lane_iou: float = 1.0

    def __post_init__(self) -> None:
        bad = {k: v for k, v in asdict(self).items() if not v >= 0}
        if bad:
            raise ExportConfigError(
                f"INT8 budgets are the points a metric may drop and must be >= 0, got {bad}"
            )


@dataclass(frozen=True)
class Int8Options:
    """Hop 2b, FP32 ONNX -> INT8 (Q/DQ) ONNX: calibration images from `calib_data`'s
    `calib_split` (a data set root, or a .npy of preprocessed images), the calibration method,
    and the per-task guard that scores the INT8 ONNX on `guard_data`'s `guard_split` (default:
    the calibration data set) against the FP32 export and leaves layers in FP16 until every task
    is within its budget. `exclude` names layers (ONNX node names) or layer groups to keep out
    of INT8 whatever the guard finds."""

    enabled: bool = False
    calib_data: str | None = None
    calib_split: str = "train"
    calib_images: int = 128
    calib_batch: int = 8
    calibration: str = "auto"  # try AUTO_CANDIDATES, keep the one closest to FP32 (docs/INT8.md)
    percentile: float = 99.99
    guard: bool = True
    guard_data: str | None = None
    guard_split: str = "val"
    guard_images: int | None = None
    budgets: Int8Budgets = field(default_factory=Int8Budgets)
    exclude: tuple[str, ...] = ()
    group_size: int = 8

    def __post_init__(self) -> None:
        from export.int8.calibrate import AUTO, CALIBRATIONS

        if not self.enabled:
            return
        if not self.calib_data:
            raise ExportConfigError(
                "--int8 needs calibration images: --calib-data DIR (a data set root; its "
                f"{self.calib_split!r} split is used) or --calib-data images.npy"
            )
        _check_choice("calibration", self.calibration, (AUTO, *CALIBRATIONS))
        if self.calibration == AUTO and not self.guard:
            raise ExportConfigError(
                "--calibration auto picks the method on the guard images, and the guard is off: "
                f"name a method ({', '.join(CALIBRATIONS)}) or drop --no-guard"
            )
        if self.calib_batch < 1 or self.calib_images < self.calib_batch:
            raise ExportConfigError(
                f"--calib-images {self.calib_images} must be >= --calib-batch {self.calib_batch} "
                "(and the batch >= 1)"
            )
        if not 0.0 < self.percentile <= 100.0:
            raise ExportConfigError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.guard_images is not None and self.guard_images < 1:
            raise ExportConfigError(f"--guard-images must be >= 1, got {self.guard_images}")
        if self.group_size < 1:
            raise ExportConfigError(f"int8 group_size must be >= 1, got {self.group_size}")
        if self.guard and self.guard_data is None and str(self.calib_data).endswith(".npy"):
            raise ExportConfigError(
                "the INT8 guard scores a data set's val split, and --calib-data is a .npy: pass "
                "--guard-data DIR (a data set root) or --no-guard"
            )

    @property
    def guard_root(self) -> str | None:
        return self.guard_data or self.calib_data


@dataclass(frozen=True)
class ExportConfig:
    """Everything `export_model` needs besides the model, one section per hop:

    ExportConfig(output=OutputOptions(dir="out"), onnx=OnnxOptions(nms_in_graph=True),
                 tensorrt=TensorRTOptions(engine="none"))"""

    output: OutputOptions = field(default_factory=OutputOptions)
    input: InputOptions = field(default_factory=InputOptions)
    onnx: OnnxOptions = field(default_factory=OnnxOptions)
    half: HalfOptions = field(default_factory=HalfOptions)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)
    checks: CheckOptions = field(default_factory=CheckOptions)
    seed: int = 0  # the tracing input and the probe inputs
    int8: Int8Options = field(default_factory=Int8Options)

    def __post_init__(self) -> None:
        """The rules that span sections (each section checks its own fields)."""
        t = get_target(self.tensorrt.target or DEFAULT_TARGET)
        if not t.opset_min <= self.onnx.opset <= t.opset_max:
            raise ExportConfigError(
                f"--opset {self.onnx.opset} is outside {t.opset_min}..{t.opset_max}, the range "
                f"TensorRT {t.name} parses; use --opset {DEFAULT_OPSET}"
            )
        self._check_trt_nms(t.name, t.trt_nms)
        self._check_int8_and_dla(t.name)
        self._check_uint8_input()
        if self.tensorrt.engine == "fp16" and t.strongly_typed and not self.half.enabled:
            raise ExportConfigError(
                f"--engine fp16 for TensorRT {t.name} builds from the FP16 ONNX (strongly "
                "typed), but --no-fp16-onnx was given; drop --no-fp16-onnx or use --engine fp32"
            )

    def _check_int8_and_dla(self, target: str) -> None:
        """`--engine int8` builds from the INT8 ONNX that `--int8` makes; DLA runs static shapes
        only, and its INT8 (implicit, from the calibration cache) needs TensorRT 10.x."""
        t, b = self.tensorrt, self.input
        int8 = self.int8
        if t.engine == "int8" and not int8.enabled:
            raise ExportConfigError(
                "--engine int8 builds the INT8 (Q/DQ) ONNX, which only --int8 makes; add --int8 "
                "--calib-data DIR, or use --engine fp16"
            )
        if t.engine == "int8" and t.nms != NMS_NONE:
            raise ExportConfigError(
                f"--engine int8 with --trt-nms {t.nms} is not supported yet (the INT8 check has "
                "no NMS reference); use --trt-nms none (NMS in the runtime) or --nms-in-graph"
            )
        if t.dla_core is None or t.engine == "none" or t.dry_run:
            return
        if b.min_batch != b.max_batch:
            raise ExportConfigError(
                f"--dla-core {t.dla_core}: DLA runs static shapes only, but the batch range is "
                f"{b.min_batch}..{b.max_batch}; use one batch size (--min-batch B --batch B "
                "--max-batch B)"
            )
        if t.engine == "int8" and get_target(target).strongly_typed:
            raise ExportConfigError(
                f"--engine int8 --dla-core: DLA INT8 needs implicit quantisation (a calibration "
                f"cache), which TensorRT {target} removed; use --trt-target 10.3 (JetPack 6)"
            )

    def _check_uint8_input(self) -> None:
        if self.input.dtype == "uint8" and self.tensorrt.engine != "none":
            raise ExportConfigError(
                f"--input uint8 with --engine {self.tensorrt.engine}: the engine builder does not "
                "take uint8 NHWC profiles yet; use --engine none (the ONNX runs in ONNX Runtime) "
                "or export the float input for the engine"
            )

    def _check_trt_nms(self, target: str, kinds: tuple[str, ...]) -> None:
        nms = self.tensorrt.nms
        if nms == NMS_NONE:
            return
        if self.onnx.nms_in_graph:
            raise ExportConfigError(
                f"--trt-nms {nms} appends NMS to the engine built from the ONNX without "
                "NMS; --nms-in-graph puts ONNX NonMaxSuppression in the ONNX itself: pick one"
            )
        if nms != NMS_AUTO and nms not in kinds:
            raise ExportConfigError(
                f"--trt-nms {nms}: TensorRT target {target} supports "
                f"{', '.join(kinds) or 'no in-engine NMS'}; use --trt-nms auto or none"
            )


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ExportConfigError(f"{flag}={value!r} is not one of {', '.join(choices)}")


def check_imgsz(
    imgsz: tuple[int, int] | list[int], stride: int | None = None, model: str = "the model"
) -> tuple[int, int]:
    """(H, W), each a positive multiple of the model's stride (its spec's input-size rule: the
    feature grids and the segmentation upsampling only line up then) and at most
    runtime.input_size.MAX_SIDE; `stride` None before the checkpoint is read."""
    return check_input_size(imgsz, stride, model=model, error=ExportConfigError)


def resolve_trt_target(cfg_target: str | None, installed_version: str | None) -> str:
    """The target to lint for and build: asked for, else the installed TensorRT's, else
    DEFAULT_TARGET (runtime/tensorrt/targets.py)."""
    return resolve_target(cfg_target, installed_version).name
