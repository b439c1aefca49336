"""Reinforcement learning in the slime style (paper §3.2-3.5): rollout records, the data buffer
between rollout and training, the GRPO loss (no KL term, clip-higher, token-weighted mean),
dynamic sampling, the two-stage difficulty curriculum, dynamic temperature, overlong handling and
verifiable rewards.

Rewards live in `glm45.rl.rewards` (imported on demand: it pulls in the chat, task and sandbox
packages).
"""

from glm45.rl.batch import RLBatch, collate
from glm45.rl.buffer import DataBuffer, PrioritySampling, PromptItem, make_strategy
from glm45.rl.curriculum import CurriculumConfig, DifficultyCurriculum
from glm45.rl.dynamic_sampling import DynamicSamplingReport, collect_groups, prompts_to_request
from glm45.rl.errors import RLError
from glm45.rl.filters import all_rewarded, has_reward_variance, max_staleness, no_failed
from glm45.rl.grpo import GRPOConfig, assign_advantages, group_advantages, grpo_loss, policy_loss, response_logprobs
from glm45.rl.overlong import OverlongConfig, apply_overlong
from glm45.rl.plateau import PlateauDetector
from glm45.rl.sample import Sample, Status, from_generation, group_samples
from glm45.rl.sources import IterableSource, ListSource
from glm45.rl.temperature import DynamicTemperature, TemperatureConfig, select_temperature

__all__ = [
    "RLBatch", "collate",
    "DataBuffer", "PrioritySampling", "PromptItem", "make_strategy",
    "CurriculumConfig", "DifficultyCurriculum",
    "DynamicSamplingReport", "collect_groups", "prompts_to_request",
    "RLError",
    "all_rewarded", "has_reward_variance", "max_staleness", "no_failed",
    "GRPOConfig", "assign_advantages", "group_advantages", "grpo_loss", "policy_loss", "response_logprobs",
    "OverlongConfig", "apply_overlong",
    "PlateauDetector",
    "Sample", "Status", "from_generation", "group_samples",
    "IterableSource", "ListSource",
    "DynamicTemperature", "TemperatureConfig", "select_temperature",
]
