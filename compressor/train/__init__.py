"""Training and evaluation: one loop for the teacher, the pruned student (with a distillation
`TrainExtension`) and DDP runs; evaluation under YOLOP's protocol."""

from compressor.train.config import TrainConfig, TrainConfigError
from compressor.train.eval_checkpoint import (
    EvalJob,
    evaluate_checkpoint,
    evaluate_path,
    write_eval_report,
)
from compressor.train.evaluate import EvalConfig, EvalConfigError, evaluate, summarize
from compressor.train.extension import TrainExtension
from compressor.train.loop import NonFiniteLossError, TrainResult, train
from compressor.train.setup import resume_config

__all__ = [
    "EvalConfig",
    "EvalConfigError",
    "EvalJob",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainConfigError",
    "TrainExtension",
    "TrainResult",
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_path",
    "resume_config",
    "summarize",
    "train",
    "write_eval_report",
]
