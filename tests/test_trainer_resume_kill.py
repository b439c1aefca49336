"""A pre-training run SIGKILLed after a checkpoint and resumed continues the exact loss curve
of the uninterrupted run (fp32, same process count): the real-kill version of the resume test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from glm45.train.checkpoint import latest_checkpoint
from glm45.train.metrics import read_metrics
from helpers_train import synthetic_shards

KEYS = ("step", "stage", "tokens", "loss", "mtp_loss", "aux_loss", "grad_norm", "lr", "batch_tokens",
        "max_violation", "rope_theta")


@pytest.mark.slow
def test_a_killed_run_resumes_onto_the_same_loss_curve(tmp_path):
    shards = synthetic_shards(tmp_path / "shards")
    cmd = [sys.executable, "-m", "glm45", "pretrain", "--data", str(shards), "--preset", "tiny", "--tokens", "3072",
           "--batch-tokens", "256", "--batch-start-tokens", "128", "--micro-batch", "2", "--autocast", "float32",
           "--checkpoint-every", "4", "--quiet", "--no-export"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full_out, cut_out = tmp_path / "full", tmp_path / "cut"
    full = subprocess.Popen([*cmd, "--out", str(full_out)], env=env, stderr=subprocess.PIPE)
    victim = subprocess.Popen([*cmd, "--out", str(cut_out)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while True:  # kill once it has checkpointed and trained on past the checkpoint
            rows = read_metrics(cut_out / "metrics.jsonl")
            ckpt = latest_checkpoint(cut_out / "checkpoints")
            if ckpt is not None and rows and rows[-1]["step"] > int(ckpt.name.split("_")[1]) + 1:
                break
            assert victim.poll() is None, "the run finished before it could be killed: " + victim.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        victim.kill()
    killed_at = read_metrics(cut_out / "metrics.jsonl")[-1]["step"]
    assert not (cut_out / "summary.json").exists()

    resumed = subprocess.run([*cmd, "--out", str(cut_out), "--resume"], env=env, capture_output=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert full.wait(timeout=600) == 0, full.stderr.read().decode()
    want = [{k: r.get(k) for k in KEYS} for r in read_metrics(full_out / "metrics.jsonl")]
    got = [{k: r.get(k) for k in KEYS} for r in read_metrics(cut_out / "metrics.jsonl")]
    assert killed_at < len(want) and want[-1]["tokens"] >= 3072
    assert got == want  # exact equality, every step
