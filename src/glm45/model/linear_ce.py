"""Output head and cross-entropy in one op, chunk by chunk: the [N, V] logits never all exist.

`linear_cross_entropy(h, W, targets)` equals `F.cross_entropy((h @ W.T).float(), targets,
reduction="sum", ignore_index=-100)` and its gradients, but computes them a chunk of rows at a
time in the forward pass: each chunk's logits, their log-sum-exp, the loss, and
d loss / d logits = softmax − onehot, which two matmuls turn into the chunk's share of dh and
dW straight away. Backward then only scales the stored dh and dW by the incoming gradient.

Why: with a 151,552-token vocabulary the plain path keeps [N, V] logits, their fp32 copy and a
zero-filled fp32 gradient of the same size (3.4 GiB at its peak for 2048 rows in
`benchmarks/lm_loss.py`); here the peak is one chunk (0.6-1.0 GiB there). It also skips the
separate cast, log-softmax and its backward, which are a large part of a small model's step. The
matmul FLOPs are the same as the plain path's (logits, dh, dW), and the loss must enter the
objective linearly (it is a sum), which the LM and MTP losses do.

Under autocast the matmuls run in the autocast dtype (as `nn.Linear` would), the softmax in
fp32, and dW accumulates over chunks in W's own dtype.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
# Rows per chunk: CHUNK_ELEMENTS / V (8 MiB of fp32 logits), at least MIN_ROWS. A chunk's dW is a
# [V, D] matmul over its rows; with fewer rows it is bound by writing [V, D] and accumulating it
# (vocab 151552, bf16: 128 rows 9.0 s, 512 rows 6.6 s, 1024 rows 6.1 s for 2048 rows in all).
CHUNK_ELEMENTS = 1 << 21
MIN_ROWS = 512
# Rows of a chunk's fp32 softmax done at once: 512 KiB, about one core's L2.
SUB_ELEMENTS = 1 << 17


def _compute_dtype(h: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    device = h.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(h.dtype, weight.dtype)


def _loss_and_grad_in_place(logits_MV: torch.Tensor, targets_M: torch.Tensor, want_grad: bool) -> torch.Tensor:
    """Summed CE of a chunk's logits; with `want_grad`, overwrites them with d loss / d logits =
    softmax - onehot (without, the logits are left scrambled).

    The fp32 softmax runs a few rows at a time (SUB_ELEMENTS), so its passes stay in cache
    instead of streaming the whole chunk through memory each time. It is torch's own softmax
    kernel, in place: its exp is ~1.5x faster than `exp_` here (77 vs 108 us for 16 x 8192).
    The log-sum-exp comes from the softmax too: the largest logit's probability is
    exp(top - lse) >= 1/V, so lse = top - log(p_top) loses nothing to underflow.
    """
    valid = targets_M != IGNORE_INDEX
    safe_t = torch.where(valid, targets_M, 0)
    total = torch.zeros((), dtype=torch.float32, device=logits_MV.device)
    rows = max(1, SUB_ELEMENTS // logits_MV.shape[1])
    for start in range(0, logits_MV.shape[0], rows):
        part = logits_MV[start:start + rows]
        logits = part.float()  # the chunk itself when it is fp32
        t, keep = safe_t[start:start + rows, None], valid[start:start + rows]
        picked = logits.gather(1, t).squeeze(1)
        top = logits.amax(dim=-1)
        probs = torch.softmax(logits, dim=-1, out=logits)
        lse = top - probs.amax(dim=-1).log()
        total += torch.where(keep, lse - picked, 0.0).sum()
        if not want_grad:
            continue
        grad = probs.scatter_add_(1, t, torch.full_like(picked[:, None], -1.0))
        grad.mul_(keep[:, None])  # ignored rows get no gradient
        if grad.data_ptr() != part.data_ptr():
            part.copy_(grad)
    return total


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_ND, weight_VD, targets_N, compute_dtype, chunk_rows):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        w = weight_VD.to(compute_dtype)
        grad_h = torch.empty_like(h_ND) if need_h else None
        grad_w = None  # the first chunk's product starts it (no zero-filled [V, D] to add to)
        total = torch.zeros((), dtype=torch.float32, device=h_ND.device)
        # One chunk buffer for all chunks: fresh multi-MiB tensors per chunk cost page faults.
        logits_buf = h_ND.new_empty((min(chunk_rows, h_ND.shape[0]), weight_VD.shape[0]), dtype=compute_dtype)
        with torch.autocast(h_ND.device.type, enabled=False):
            for start in range(0, h_ND.shape[0], chunk_rows):
                stop = min(start + chunk_rows, h_ND.shape[0])
                h = h_ND[start:stop].to(compute_dtype)
                logits = torch.mm(h, w.T, out=logits_buf[: stop - start])
                total += _loss_and_grad_in_place(logits, targets_N[start:stop], need_h or need_w)
                if not (need_h or need_w):
                    continue
                grad = logits  # now d loss / d logits
                if need_h:
                    grad_h[start:stop] = grad @ w
                if need_w:
                    if grad_w is None:
                        grad_w = (grad.T @ h).to(weight_VD.dtype)
                    elif grad.dtype == grad_w.dtype:
                        grad_w.addmm_(grad.T, h)
                    else:  # no mixed-precision addmm on CPU: a bf16 product, accumulated in fp32
                        grad_w += (grad.T @ h).to(grad_w.dtype)
        if need_w and grad_w is None:  # no rows
            grad_w = torch.zeros_like(weight_VD)
        ctx.save_for_backward(*(g for g in (grad_h, grad_w) if g is not None))
        return total

    @staticmethod
    def backward(ctx, grad_out):
        # the saved gradients are those needs_input_grad asked for; a 0-dim fp32 factor keeps their dtype
        saved = iter(ctx.saved_tensors)
        grads = [next(saved) * grad_out if need else None for need in ctx.needs_input_grad[:2]]
        return *grads, None, None, None


def linear_cross_entropy(h_ND: torch.Tensor, weight_VD: torch.Tensor, targets_N: torch.Tensor, *,
                         chunk_rows: int | None = None) -> torch.Tensor:
    """Sum over rows whose target is not -100 of CE(h @ weight.T, target); fp32 scalar.

    h [N, D] hidden states, weight [V, D] the output head, targets [N] token ids or -100.
    `chunk_rows`: rows per chunk (default: 8 MiB of fp32 logits, at least 512 rows).
    """
    if h_ND.ndim != 2 or weight_VD.ndim != 2 or h_ND.shape[1] != weight_VD.shape[1]:
        raise ValueError(f"need h [N, D] and weight [V, D], got {tuple(h_ND.shape)} and {tuple(weight_VD.shape)}")
    if targets_N.shape != h_ND.shape[:1]:
        raise ValueError(f"targets must be [N] = {h_ND.shape[0]}, got {tuple(targets_N.shape)}")
    rows = chunk_rows or max(MIN_ROWS, CHUNK_ELEMENTS // weight_VD.shape[0])
    return _LinearCrossEntropy.apply(h_ND, weight_VD, targets_N, _compute_dtype(h_ND, weight_VD), rows)
