"""Muon + AdamW optimizer: parameter routing, parity with torch.optim.Muon / AdamW, batched
expert Muon, weight decay, update RMS, and exact resume from a state_dict."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from glm45.train.optim import (
    MuonAdamW,
    OptimizerConfigError,
    build_optimizer,
    muon_lr_scale,
    newton_schulz,
    uses_muon,
)

H, V, E, I = 8, 16, 4, 6  # hidden, vocab, experts, expert width


def _put(root: nn.Module, path: str, tensor: torch.Tensor) -> None:
    *mods, leaf = path.split(".")
    m = root
    for part in mods:
        if not hasattr(m, part):
            m.add_module(part, nn.Module())
        m = getattr(m, part)
    m.register_parameter(leaf, nn.Parameter(tensor))


def fake_glm(seed: int = 0) -> nn.Module:
    """A module with GLM45ForCausalLM's parameter names and (small) shapes."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "model.embed_tokens.weight": (V, H),
        "lm_head.weight": (V, H),
        "model.norm.weight": (H,),
        "model.layers.0.input_layernorm.weight": (H,),
        "model.layers.0.self_attn.q_proj.weight": (2 * H, H),
        "model.layers.0.self_attn.q_proj.bias": (2 * H,),
        "model.layers.0.self_attn.o_proj.weight": (H, 2 * H),
        "model.layers.0.self_attn.q_norm.weight": (4,),
        "model.layers.0.mlp.gate_proj.weight": (3 * H, H),
        "model.layers.1.mlp.gate.weight": (E, H),
        "model.layers.1.mlp.experts.gate_proj": (E, I, H),
        "model.layers.1.mlp.experts.down_proj": (E, H, I),
        "model.layers.1.mlp.shared_experts.up_proj.weight": (I, H),
        "mtp.embed_tokens.weight": (V, H),
        "mtp.shared_head.head.weight": (V, H),
        "mtp.shared_head.norm.weight": (H,),
        "mtp.eh_proj.weight": (H, 2 * H),
        "mtp.enorm.weight": (H,),
    }
    root = nn.Module()
    for name, shape in shapes.items():
        _put(root, name, torch.randn(*shape, generator=g))
    return root


def _set_grads(params, step: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed * 1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def test_parameter_routing_follows_the_paper():
    model = fake_glm()
    opt = build_optimizer(model, lr=0.02, adamw_lr=0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    by_group = {g["name"]: {names[id(p)] for p in g["params"]} for g in opt.param_groups}
    assert by_group["adamw"] == {"model.embed_tokens.weight", "lm_head.weight",
                                 "mtp.embed_tokens.weight", "mtp.shared_head.head.weight"}
    assert "model.layers.1.mlp.gate.weight" in by_group["muon"]
    assert "model.layers.1.mlp.experts.gate_proj" in by_group["muon"]
    assert "mtp.eh_proj.weight" in by_group["muon"]
    assert by_group["adamw_vectors"] == {n for n, p in model.named_parameters() if p.ndim == 1}
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["adamw"]["lr"] == 0.01 and groups["adamw"]["lr_ratio"] == 0.5
    assert groups["adamw"]["weight_decay"] == 0.1
    assert groups["adamw_vectors"]["weight_decay"] == 0.0
    assert groups["muon"]["lr"] == 0.02 and groups["muon"]["betas"] == (0.9, 0.95)
    assert not uses_muon("model.layers.0.self_attn.q_proj.bias", torch.zeros(3))
    assert not uses_muon("lm_head.weight", torch.zeros(3, 3))
    assert uses_muon("model.layers.1.mlp.experts.up_proj", torch.zeros(2, 3, 3))


@pytest.mark.parametrize("shape", [(12, 20), (20, 12), (7, 7)])
def test_matches_torch_muon_on_2d_matrices(shape):
    torch.manual_seed(0)
    ours = [nn.Parameter(torch.randn(*shape)), nn.Parameter(torch.randn(shape[1], shape[0]))]
    ref = [nn.Parameter(p.detach().clone()) for p in ours]
    opt = MuonAdamW([dict(params=ours, use_muon=True)], lr=0.02, weight_decay=0.1)
    ref_opt = torch.optim.Muon(ref, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True,
                               ns_steps=5, adjust_lr_fn="match_rms_adamw")
    for step in range(6):
        _set_grads(ours, step)
        _set_grads(ref, step)
        opt.step()
        ref_opt.step()
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.equal(ours[0], torch.zeros(shape))


def test_adamw_groups_match_torch_adamw():
    torch.manual_seed(0)
    ours = [nn.Parameter(torch.randn(16, 8)), nn.Parameter(torch.randn(8))]
    ref = [nn.Parameter(p.detach().clone()) for p in ours]
    opt = MuonAdamW([dict(params=ours, use_muon=False)], lr=3e-3, weight_decay=0.1)
    ref_opt = torch.optim.AdamW(ref, lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                                foreach=False)
    for step in range(5):
        _set_grads(ours, step)
        _set_grads(ref, step)
        opt.step()
        ref_opt.step()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("ns_dtype", ["float32", "bfloat16"])
def test_batched_expert_muon_equals_per_expert_muon(ns_dtype):
    torch.manual_seed(0)
    w = torch.randn(E, I, H)
    batched = nn.Parameter(w.clone())
    singles = [nn.Parameter(w[e].clone()) for e in range(E)]
    opt_b = MuonAdamW([dict(params=[batched], use_muon=True)], lr=0.02, ns_dtype=ns_dtype)
    opt_s = MuonAdamW([dict(params=singles, use_muon=True)], lr=0.02, ns_dtype=ns_dtype)
    for step in range(4):
        _set_grads([batched], step)
        for e, p in enumerate(singles):
            p.grad = batched.grad[e].clone()
        opt_b.step()
        opt_s.step()
    tol = dict(rtol=1e-5, atol=1e-6) if ns_dtype == "float32" else dict(rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(batched.detach(), torch.stack([p.detach() for p in singles]), **tol)


def test_newton_schulz_orthogonalises_and_batches():
    torch.manual_seed(0)
    q1, _ = torch.linalg.qr(torch.randn(3, 16, 16))
    q2, _ = torch.linalg.qr(torch.randn(3, 24, 24))
    s = torch.linspace(0.1, 1.0, 16)
    G = q1 @ torch.diag_embed(s.expand(3, 16)) @ q2[:, :16, :]  # [3, 16, 24], singular values 0.1..1
    O = newton_schulz(G, dtype=torch.float32)
    sv = torch.linalg.svdvals(O)
    assert sv.min() > 0.6 and sv.max() < 1.25  # the quintic lands near 1, not exactly on it
    for b in range(3):
        torch.testing.assert_close(O[b], newton_schulz(G[b], dtype=torch.float32), rtol=1e-5, atol=1e-6)
    tall = newton_schulz(G.mT, dtype=torch.float32)  # rows > cols: transposed internally
    torch.testing.assert_close(tall, O.mT, rtol=1e-5, atol=1e-6)


def test_update_rms_is_matched_to_point_two():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(32, 64))
    before = p.detach().clone()
    opt = MuonAdamW([dict(params=[p], use_muon=True)], lr=1e-2, weight_decay=0.0, ns_dtype="float32")
    p.grad = torch.randn(32, 64)
    opt.step()
    rms = (p.detach() - before).pow(2).mean().sqrt().item() / 1e-2
    assert 0.15 < rms < 0.25
    assert muon_lr_scale(torch.Size([4, 32, 64]), 0.2) == pytest.approx(0.2 * 8.0)


def test_decoupled_weight_decay_uses_unscaled_lr():
    p = nn.Parameter(torch.randn(6, 10))
    q = nn.Parameter(torch.randn(10))
    before_p, before_q = p.detach().clone(), q.detach().clone()
    opt = MuonAdamW([dict(params=[p], use_muon=True), dict(params=[q], use_muon=False)],
                    lr=0.5, weight_decay=0.1)
    p.grad = torch.zeros_like(p)  # zero update: only the decay acts
    q.grad = torch.zeros_like(q)
    opt.step()
    torch.testing.assert_close(p.detach(), before_p * (1 - 0.5 * 0.1))
    torch.testing.assert_close(q.detach(), before_q * (1 - 0.5 * 0.1))


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    params = list(model.parameters())
    for step in steps:
        _set_grads(params, step, seed=7)
        opt.step()
        opt.zero_grad()


def test_state_dict_round_trip_resumes_identically():
    model = fake_glm()
    opt = build_optimizer(model, lr=0.01, adamw_lr=0.003)
    _train(model, opt, range(3))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    _train(model, opt, range(3, 6))

    buf.seek(0)
    ckpt = torch.load(buf)
    resumed = fake_glm(seed=123)
    resumed.load_state_dict(ckpt["model"])
    opt2 = build_optimizer(resumed, lr=0.01, adamw_lr=0.003)
    opt2.load_state_dict(ckpt["opt"])
    _train(resumed, opt2, range(3, 6))
    for (name, a), (_, b) in zip(model.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name


def test_works_with_torch_lr_scheduler():
    model = fake_glm()
    opt = build_optimizer(model, lr=0.01, adamw_lr=0.002)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    _train(model, opt, range(1))
    sched.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["muon"] == pytest.approx(0.005) and lrs["adamw"] == pytest.approx(0.001)


def test_bad_settings_raise_clear_errors():
    p = nn.Parameter(torch.randn(4, 4))
    with pytest.raises(OptimizerConfigError, match="ns_dtype"):
        MuonAdamW([dict(params=[p], use_muon=True)], lr=0.1, ns_dtype="float16")
    with pytest.raises(OptimizerConfigError, match="matrices"):
        MuonAdamW([dict(params=[nn.Parameter(torch.randn(4))], use_muon=True)], lr=0.1)
    with pytest.raises(OptimizerConfigError, match="lr"):
        build_optimizer(fake_glm(), lr=0.0)


def _dtensor_worker(rank: int, world: int, port: int, results: dict) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    try:
        mesh = init_device_mesh("cpu", (world,))
        torch.manual_seed(0)
        # 2-D matrices (gathered for Newton–Schulz, one with uneven rows), a 3-D expert
        # tensor (whole experts per rank: orthogonalised locally) and an AdamW vector.
        full = [torch.randn(7, 5), torch.randn(4, 12), torch.randn(E, I, H), torch.randn(9)]
        sharded = [nn.Parameter(distribute_tensor(t.clone(), mesh, [Shard(0)])) for t in full]
        opt = MuonAdamW([dict(params=sharded[:3], use_muon=True),
                         dict(params=sharded[3:], use_muon=False)], lr=0.02)
        for step in range(3):
            g = torch.Generator().manual_seed(step)
            for p, t in zip(sharded, full):
                p.grad = distribute_tensor(torch.randn(t.shape, generator=g), mesh, [Shard(0)])
            opt.step()
        gathered = [p.detach().full_tensor() for p in sharded]
        if rank == 0:
            results["gathered"] = gathered
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_dtensor_shards_match_plain_tensors(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_dtensor_worker, args=(2, port, results), nprocs=2, join=True)

    torch.manual_seed(0)
    plain = [nn.Parameter(t) for t in [torch.randn(7, 5), torch.randn(4, 12), torch.randn(E, I, H),
                                       torch.randn(9)]]
    opt = MuonAdamW([dict(params=plain[:3], use_muon=True), dict(params=plain[3:], use_muon=False)],
                    lr=0.02)
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        for p in plain:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    for got, want in zip(results["gathered"], plain):
        torch.testing.assert_close(got, want.detach(), rtol=1e-6, atol=1e-7)
