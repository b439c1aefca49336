"""Block-wise FP8 (e4m3) weights in the layout of the released GLM-4.5-FP8 checkpoints:
128x128 blocks, one fp32 `weight_scale_inv` per block; real value = q * scale_inv,
scale_inv = block amax / 448 (the e4m3 maximum)."""

from __future__ import annotations

import torch

FP8_MAX = 448.0
BLOCK = 128


def dequantize_blockwise(q: torch.Tensor, scale_inv: torch.Tensor, block: int = BLOCK,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[R, C] e4m3 values and [ceil(R/b), ceil(C/b)] scales -> [R, C] `dtype` weights."""
    rows, cols = q.shape[-2:]
    scale = scale_inv.float().repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return (q.float() * scale[..., :rows, :cols]).to(dtype)


def quantize_blockwise(w: torch.Tensor, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """[R, C] weights -> (e4m3 [R, C], fp32 scale_inv [ceil(R/b), ceil(C/b)])."""
    rows, cols = w.shape[-2:]
    pr, pc = -rows % block, -cols % block
    padded = torch.nn.functional.pad(w.float(), (0, pc, 0, pr))
    lead = padded.shape[:-2]
    blocks = padded.reshape(*lead, (rows + pr) // block, block, (cols + pc) // block, block)
    amax = blocks.abs().amax(dim=(-3, -1)).clamp(min=1e-12)
    scale_inv = amax / FP8_MAX
    q = (blocks / scale_inv[..., :, None, :, None]).clamp(-FP8_MAX, FP8_MAX)
    q = q.reshape(*lead, rows + pr, cols + pc)[..., :rows, :cols].to(torch.float8_e4m3fn)
    return q.contiguous(), scale_inv.contiguous()
