"""Trajectory generation (paper §3.1, step 3): a model works each task with its tools, and a
simulated user turns multi-step tasks into multi-round dialogues.

Episodes are `glm45.eval.agent.Episode`s (the evaluation harness's agent loop): each round, every
unfinished episode says which model must answer next (the agent, or an LLM-simulated user);
all agent requests of the round go to the backend as one batch (the local engine batches them
on its KV cache; an HTTP backend sends them concurrently), then all user requests.

The user is
- rule-based (`RuleUser`, wrapping `glm45.tasks.UserSimulator`): it knows the task's follow-up
  replies and gives one when the assistant asks about it, and ends the dialogue otherwise;
- or a model (`glm45.eval.agent.LLMUser` with the paper's user prompt and the task's
  instruction) when a user backend is given and the task has no scripted follow-ups.

A `Trajectory` keeps the episode, the environment it acted on (for terminal-state checks) and
each agent turn's finish reason (for truncation checks); `to_sample()` is the SFT record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from glm45.eval.agent import STOP, Episode, LLMUser
from glm45.eval.backend import Backend, ChatRequest, ChatSample
from glm45.sft.agentic.tasks import AgentTask
from glm45.sft.agentic.toolkit import ToolEnvironment, Toolkit
from glm45.tasks import UserSimulator


class RuleUser:
    """The rule-based simulated user in the shape an Episode talks to."""

    def __init__(self, task: AgentTask, max_turns: int = 3):
        self.task = task
        self.sim = UserSimulator(task, max_turns=max_turns)  # reads only .user and .followups

    def respond(self, dialogue: list[dict]) -> str:
        if not dialogue:
            return self.task.user
        last = dialogue[-1]
        if last["role"] != "agent":
            return STOP
        reply = self.sim.respond({"role": "assistant", "content": last["content"]})
        return STOP if reply is None else reply["content"]


class OpeningLLMUser(LLMUser):
    """An LLM user whose first message is the task's own request (the model speaks after that)."""

    def __init__(self, task: AgentTask, seed: int):
        super().__init__(task.instruction or task.user, seed)
        self.opening = task.user

    def respond(self, dialogue: list[dict]) -> ChatRequest | str:
        return self.opening if not dialogue else super().respond(dialogue)


@dataclass
class RolloutConfig:
    samples_per_task: int = 1
    enable_thinking: bool = True
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 512  # per agent turn
    max_turns: int = 8  # agent turns per episode
    seed: int = 0
    system: str | None = None


@dataclass
class Trajectory:
    task: AgentTask
    episode: Episode
    enable_thinking: bool
    sample_index: int = 0
    finish_reasons: list[str] = field(default_factory=list)  # one per agent turn

    @property
    def env(self) -> ToolEnvironment:
        return self.episode.env

    @property
    def messages(self) -> list[dict]:
        return self.episode.messages

    def to_sample(self) -> dict[str, Any]:
        """The SFT record: the agent's view of the dialogue, its tools, and what checks it."""
        return {
            "id": f"{self.task.id}-s{self.sample_index}",
            "messages": self.episode.messages,
            "tools": self.env.tools(),
            "enable_thinking": self.enable_thinking,
            "meta": {"domain": "agent", "verifier": "tool", "task": self.task.to_dict(),
                     "finish_reasons": list(self.finish_reasons), "end": self.episode.end,
                     "require_reasoning": False},
        }


def generate_trajectories(tasks: Sequence[AgentTask], toolkit: Toolkit, backend: Backend,
                          config: RolloutConfig | None = None, *, user_backend: Backend | None = None
                          ) -> list[Trajectory]:
    """`config.samples_per_task` trajectories per task, in task order."""
    config = config or RolloutConfig()
    trajectories: list[Trajectory] = []
    for t_index, task in enumerate(tasks):
        for j in range(config.samples_per_task):
            seed = (config.seed * 1_000_003 + t_index * 7919 + j * 104_729) % 2**31
            if user_backend is not None and not task.followups and task.instruction:
                user: Any = OpeningLLMUser(task, seed)
            else:
                user = RuleUser(task)
            env = toolkit.environment(task.tools)
            tools = env.tools()

            def agent_request(messages: list[dict], turn: int, seed: int = seed, tools=tools) -> ChatRequest:
                return ChatRequest(messages=[dict(m) for m in messages], tools=tools, temperature=config.temperature,
                                   top_p=config.top_p, max_tokens=config.max_tokens,
                                   enable_thinking=config.enable_thinking, seed=(seed + 7919 * turn) % 2**31)

            episode = Episode(env=env, user=user, agent_request=agent_request, system=config.system,
                              max_turns=config.max_turns)
            trajectories.append(Trajectory(task, episode, config.enable_thinking, j))
    backends = {"agent": backend, "user": user_backend or backend}
    while True:
        work: dict[str, list[tuple[Trajectory, ChatRequest]]] = {"agent": [], "user": []}
        for traj in trajectories:
            turn = traj.episode.pending()
            if turn is not None:
                work[turn[0]].append((traj, turn[1]))
        if not work["agent"] and not work["user"]:
            break
        for who, pairs in work.items():
            if not pairs:
                continue
            results = backends[who].chat([r for _, r in pairs])
            for (traj, _), result in zip(pairs, results):
                sample: ChatSample = result.samples[0]
                if who == "agent":
                    traj.finish_reasons.append(sample.finish_reason)
                    if sample.finish_reason == "length":  # a cut-off turn ends the episode
                        traj.episode.advance(sample)
                        traj.episode.end = "truncated"
                        continue
                traj.episode.advance(sample)
    return trajectories
