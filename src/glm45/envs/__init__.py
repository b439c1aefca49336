"""RL environments (agentic and general) behind one interface; see `glm45.envs.base`.

- `search`: BM25 "web" over a document collection, multi-hop questions from a knowledge graph.
- `coding`: fix a small repository so hidden tests pass, every run in the sandbox.
- `function_calling`: multi-turn tool use with a simulated user; step-wise records for the
  `function_call` reward.
- `ifeval`, `pathology`: verifiers and penalties, registered as reward kinds of
  `glm45.rl.rewards`; `judge`: LLM-judge rewards over any OpenAI-compatible endpoint.

Importing this package registers the environments (`make_env`) and the reward kinds.
A task record that names an `env` is rolled out with `make_env(record["env"],
**record.get("env_config", {}))` and `env.reset(record)`; others are single-turn rewards.
"""

from glm45.envs import coding, function_calling, ifeval, pathology, search  # noqa: F401  (registration)
from glm45.envs.base import (
    BackendPolicy, EnvError, Environment, EpisodeResult, PolicyRequest, Reset, ScriptedPolicy, SingleTurnEnv, Step,
    accuracy_by_turns, make_env, register_env, registered_envs, run_episodes,
)

__all__ = ["BackendPolicy", "EnvError", "Environment", "EpisodeResult", "PolicyRequest", "Reset", "ScriptedPolicy",
           "SingleTurnEnv", "Step", "accuracy_by_turns", "make_env", "register_env", "registered_envs", "run_episodes"]
