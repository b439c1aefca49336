"""Automatic agentic SFT data (paper §3.1): tool registry, task synthesis, trajectory generation
with a simulated user, and judge-based filtering."""

from glm45.sft.agentic.judge import LLMJudge, ProtocolJudge, StateJudge, judge_trajectories
from glm45.sft.agentic.rollout import RolloutConfig, RuleUser, Trajectory, generate_trajectories
from glm45.sft.agentic.tasks import AgentTask, builtin_tasks, synthesize_tasks
from glm45.sft.agentic.toolkit import LLMSimulator, SchemaSimulator, Tool, ToolEnvironment, ToolError, Toolkit

__all__ = [
    "AgentTask", "LLMJudge", "LLMSimulator", "ProtocolJudge", "RolloutConfig", "RuleUser", "SchemaSimulator",
    "StateJudge", "Tool", "ToolEnvironment", "ToolError", "Toolkit", "Trajectory", "builtin_tasks",
    "generate_trajectories", "judge_trajectories", "synthesize_tasks",
]
