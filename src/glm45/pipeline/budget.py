"""How much of everything the speedrun does: the full run (≤ 30 minutes on 2 CPU cores) and
`--quick` (~3 minutes, the CI end-to-end test).

Measured on the 2-core CPU (nano preset, 1 torch thread, 2026-12-08): under bf16 autocast (the
speedrun's "auto" dtype on an AVX512-BF16 CPU) pre-training runs at ~2,400 tokens/s and packed
SFT at ~1,650; in fp32 at ~1,270 and ~1,220 (beside another run, 2026-12-07). The budgets below
are in tokens and were set at the fp32 rates, so a bf16 run finishes early (21 instead of 28 min).

SFT gets the largest share: tool calling appears late. From the same mid-trained model (2,400
samples, half tool-use trajectories), 80 SFT steps gave 12.5% schema-valid tool calls on held-out
tasks and 160 steps 80% (another base: 170 steps 60%). The peak LR matters as much: 170 steps
at 2e-3 / 4e-3 / 8e-3 gave 60% / 72.5% / 35% (40 held-out tasks, so ±7%), and at 4e-3 with
1,800 tool-use and 800 arithmetic samples (instead of 1,200 each) 77.5%; on a newer base the
same gave 55% at 170 steps and 72.5% at 220 (80% after RL). Since packed rows attend run by run
(SFT steps 1.3x cheaper), 300 steps fit: 90% on 120 held-out tasks (78% in a sibling run), and
the full run took ~25 minutes in fp32 (~21 in bf16).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    corpus_chars: int
    seq_lens: tuple[int, int, int]  # pre-training / mid-training / long-context (paper: 4K / 32K / 128K)
    heldout_fraction: float  # share of standard-library modules kept out of training
    # pre-training (two concat stages) and mid-training (three best-fit stages)
    pretrain_tokens: int
    midtrain_tokens: int
    pretrain_batch_tokens: int  # mid-training continues pre-training's batch-size schedule
    # SFT: samples per domain, optimizer steps, packed rows
    sft_reasoning: int
    sft_agent: int
    sft_general: int
    sft_steps: int
    sft_seq_len: int
    sft_batch: int
    sft_lr: float  # peak (Muon, AdamW shares it)
    # RL: GRPO steps over arithmetic and tool-call tasks
    rl_steps: int
    rl_prompts_per_step: int
    rl_group_size: int
    rl_max_tokens: int
    rl_dynamic_sampling: bool  # train only on groups whose rewards differ (paper §3.2)
    rl_eval_tasks: int
    # evaluation after each model stage
    eval_heldout_tokens: int  # held-out text scored for loss / bits-per-byte
    eval_mtp_prompts: int  # held-out text prefixes continued with MTP speculative decoding
    eval_mtp_tokens: int
    eval_tasks: int  # held-out arithmetic problems and tool tasks per check (40 tasks: ±7% on a rate)
    eval_episodes: int  # whole tool-use episodes (0: skipped)
    eval_max_tokens: int


FULL = Budget(
    corpus_chars=8_000_000, seq_lens=(256, 1024, 2048), heldout_fraction=0.05,
    pretrain_tokens=400_000, midtrain_tokens=100_000, pretrain_batch_tokens=4096,
    sft_reasoning=800, sft_agent=1800, sft_general=200, sft_steps=300, sft_seq_len=1024, sft_batch=4, sft_lr=4e-3,
    rl_steps=10, rl_prompts_per_step=8, rl_group_size=8, rl_max_tokens=96, rl_dynamic_sampling=True,
    rl_eval_tasks=128, eval_heldout_tokens=40_000, eval_mtp_prompts=32, eval_mtp_tokens=64, eval_tasks=120,
    eval_episodes=10, eval_max_tokens=160)

QUICK = Budget(
    corpus_chars=2_000_000, seq_lens=(128, 512, 1024), heldout_fraction=0.05,
    pretrain_tokens=49_152, midtrain_tokens=16_384, pretrain_batch_tokens=4096,
    sft_reasoning=300, sft_agent=60, sft_general=30, sft_steps=10, sft_seq_len=1024, sft_batch=2, sft_lr=2e-3,
    rl_steps=2, rl_prompts_per_step=4, rl_group_size=4, rl_max_tokens=48, rl_dynamic_sampling=False,
    rl_eval_tasks=8, eval_heldout_tokens=8_000, eval_mtp_prompts=8, eval_mtp_tokens=32, eval_tasks=8,
    eval_episodes=0, eval_max_tokens=96)
