"""DDP on CPU with gloo: two torchrun processes train the same model to identical weights and
only rank 0 writes checkpoints and reports."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from compressor import load_checkpoint
from compressor.train.sampler import EpochSampler

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import hashlib, os, sys
import torch
torch.set_num_threads(1)
from compressor.train import TrainConfig, train

data, out, hash_dir = sys.argv[1:4]
cfg = TrainConfig(data=data, out=out, imgsz=(64, 128), width=0.25, depth=0.33, batch=2, epochs=1,
                  max_train_images=6, max_val_images=2, workers=0, progress=False, device="cpu",
                  lr=0.01, warmup_epochs=0)
result = train(cfg)
h = hashlib.sha256()
for k, v in sorted(result.model.state_dict().items()):
    h.update(k.encode())
    h.update(v.detach().cpu().contiguous().numpy().tobytes())
rank = os.environ["RANK"]
with open(os.path.join(hash_dir, f"rank{rank}.txt"), "w") as f:
    f.write(f"{h.hexdigest()} {result.steps} {os.environ['WORLD_SIZE']}")
"""


def _hash(state: dict) -> str:
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_two_gloo_processes_end_with_identical_weights_and_one_checkpoint_set(
    synth_dataset, tmp_path
):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out, hashes = tmp_path / "run", tmp_path / "hashes"
    hashes.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        str(worker),
        str(synth_dataset),
        str(out),
        str(hashes),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [(hashes / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert lines[0][1:] == ["2", "2"]  # 6 images / 2 ranks / batch 2 -> 2 steps each, world 2
    assert lines[0][0] == lines[1][0], "ranks diverged"
    # one checkpoint set, written once (no temporary leftovers from a second writer)
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "last.pt",
        "metrics.json",
        "metrics.md",
    ]
    _, ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.train_state["world"] == 2
    assert _hash(ckpt.train_state["raw_model"]) == lines[0][0]


def test_sampler_shards_cover_the_data_once_and_resume_mid_epoch():
    shards = [EpochSampler(10, shuffle=True, seed=3, rank=r, world=3) for r in range(3)]
    for s in shards:
        s.set_epoch(2)
    seen = [i for s in shards for i in s]
    assert len(seen) == 12 and set(seen) == set(range(10))  # padded to equal shares
    assert all(len(s) == 4 for s in shards)
    again = EpochSampler(10, shuffle=True, seed=3, rank=1, world=3)
    again.set_epoch(2, skip=2)
    assert list(again) == list(shards[1])[2:] and len(again) == 2
    again.set_epoch(3)
    assert list(again) != list(shards[1])  # a new order each epoch
