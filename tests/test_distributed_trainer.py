"""Data-parallel training on 2 CPU processes (gloo): DDP and FSDP2 match one process on the same
global batch (loss, gradient norm, weights within fp32 tolerance), with gradient accumulation,
all-reduced balance loads, Muon on sharded parameters, and a checkpoint saved and resumed
under each mode."""

from __future__ import annotations

import socket

import pytest
import torch

from glm45.train.metrics import read_metrics
from helpers_train import schedule, synthetic_shards, tiny_model, tiny_trainer

STEPS = 3
MODES = ("ddp", "fsdp")


def _sched():
    # 256 tokens a step = 2 micro-batches of 4 sequences (1 process) or of 2 per rank (2 processes).
    return schedule(total_tokens=1024, warmup_tokens=128, batch_tokens=256, bias_rate=0.01)


def _worker(rank: int, world: int, port: int, shards: str, root: str, results) -> None:
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from glm45.train.balance import router_bias_buffers
    from glm45.train.distributed import init_distributed, is_fsdp, parallelize

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    try:
        info = init_distributed("cpu")
        for mode in MODES:
            out = f"{root}/{mode}"
            model = parallelize(tiny_model(), mode, info)
            assert is_fsdp(model) == (mode == "fsdp")
            tr = tiny_trainer(out, shards, micro_batch=2, sched=_sched(), model=model, rank=rank,
                              world_size=world, info=info)
            tr.train(max_steps=STEPS - 1)  # ends with a checkpoint
            # A new process would start from a differently initialised model: resume into one.
            fresh = parallelize(tiny_model(seed=9), mode, info)
            tr = tiny_trainer(out, shards, micro_batch=2, sched=schedule(), model=fresh, rank=rank,
                              world_size=world, info=info)
            tr.resume()
            tr.train(max_steps=STEPS)
            state = get_model_state_dict(fresh, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            biases = [b.clone() for b in router_bias_buffers(tr.inner).values()]
            results[f"{mode}/biases/{rank}"] = biases
            if rank == 0:
                results[f"{mode}/state"] = {k: v.clone() for k, v in state.items()}
                results[f"{mode}/rows"] = read_metrics(f"{out}/metrics.jsonl")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_and_fsdp2_on_two_processes_match_one_process(tmp_path):
    import torch.multiprocessing as mp

    torch.set_num_threads(1)
    shards = synthetic_shards(tmp_path / "shards")
    ref = tiny_trainer(tmp_path / "single", shards, micro_batch=4, sched=_sched())
    ref.train(max_steps=STEPS)
    ref_rows = read_metrics(tmp_path / "single" / "metrics.jsonl")
    assert [r["micro_batches"] for r in ref_rows] == [2] * STEPS

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, port, str(shards), str(tmp_path), results), nprocs=2, join=True)

    ref_state = ref.model.state_dict()
    for mode in MODES:
        rows = results[f"{mode}/rows"]
        assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), mode
        for r, want in zip(rows, ref_rows):
            assert r["micro_batches"] == 2 and r["batch_tokens"] == want["batch_tokens"] == 256
            for key in ("loss", "mtp_loss", "aux_loss", "grad_norm"):
                assert r[key] == pytest.approx(want[key], rel=1e-5), (mode, key)
            assert r["max_violation"] == want["max_violation"], mode  # all-reduced loads: exact counts
        state = results[f"{mode}/state"]
        assert state.keys() == ref_state.keys()
        for name, want in ref_state.items():
            # AdamW normalises near-zero gradients: fp32 reduction order may move a few entries
            # by ~1% of an update (see test_trainer's accumulation test).
            torch.testing.assert_close(state[name], want, rtol=1e-4, atol=1e-4, msg=f"{mode}: {name}")
        for b0, b1 in zip(results[f"{mode}/biases/0"], results[f"{mode}/biases/1"]):
            assert torch.equal(b0, b1)  # every rank applied the same balance update
