"""The two-stage difficulty curriculum of paper §3.2.

Too-easy prompts give all-1 groups, too-hard ones all-0 groups: no reward variance, no gradient.
Stage 1 trains on moderate prompts; once their reward saturates, stage 2 trains on a pool of
*verified* extremely difficult prompts: pass@k_small = 0 yet pass@k_large > 0 (the paper: pass@8 = 0,
pass@512 > 0), i.e. the answer is known to be reachable, so the rare success is signal, not noise.

Every rollout of a prompt is recorded (`record` / `record_group`); a prompt's attempts are
numbered in order, and pools follow from where its first success fell — exactly the paper's test
read off one run of k_large samples whose first k_small are the small run:

- first success among the first k_small attempts: "moderate";
- no success in the first k_small, and not yet k_large attempts: "candidate" (being verified; a
  share of every draw goes to candidates, whose rollouts also train when one of them succeeds);
- first success at attempt k_small .. k_large-1: "hard" (verified extremely difficult);
- no success within k_large attempts: "unsolvable" (never served: its answer may well be wrong);
- a moderate or hard prompt whose last `easy_window` attempts reach an `easy_rate` success rate
  is retired as "easy".

Prompts enter as "moderate" (unknown difficulty) unless added to another pool, e.g. an offline-
verified hard set. The stage switch: `end_step()` closes each training step; the moderate pool
counts as saturated when its mean reward over the step reaches `saturation_reward`, or its
per-step mean has plateaued, or it has run dry — and stage 2 starts once at least
`min_hard_prompts` are verified hard.

The curriculum is a data source for `DataBuffer` (`take(n)`): least-served prompts of the current
stage's pool first (ties in seeded random order), plus the candidates' share.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from glm45.rl.errors import RLError
from glm45.rl.plateau import PlateauDetector
from glm45.rl.sample import Sample

__all__ = ["CurriculumConfig", "DifficultyCurriculum", "POOLS", "PromptStats"]

POOLS = ("moderate", "candidate", "hard", "easy", "unsolvable")


@dataclass
class CurriculumConfig:
    k_small: int = 8
    k_large: int = 512
    success_threshold: float = 0.5  # a reward at least this counts as a success
    easy_window: int = 16
    easy_rate: float = 1.0
    candidate_share: float = 0.25
    saturation_reward: float = 0.9
    plateau_window: int = 10
    plateau_min_delta: float = 0.01
    min_hard_prompts: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.k_small < self.k_large:
            raise RLError(f"need 1 <= k_small < k_large, got k_small={self.k_small}, k_large={self.k_large}")
        if self.easy_window < 1 or not 0 < self.easy_rate <= 1:
            raise RLError("easy_window must be >= 1 and easy_rate lie in (0, 1]")
        if not 0 <= self.candidate_share <= 1:
            raise RLError(f"candidate_share must lie in [0, 1], got {self.candidate_share}")
        if self.min_hard_prompts < 0:
            raise RLError(f"min_hard_prompts must be >= 0, got {self.min_hard_prompts}")


@dataclass
class PromptStats:
    attempts: int = 0
    successes: int = 0
    first_success: int | None = None  # 0-based number of the first successful attempt
    recent: list[int] = field(default_factory=list)  # outcomes of the last easy_window attempts
    served: int = 0  # times handed out by take()

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0


def _default_key(prompt: Any) -> Hashable:
    if isinstance(prompt, dict) and "id" in prompt:
        return prompt["id"]
    raise RLError("prompts need an 'id' field, or pass key=callable returning a stable id")


class DifficultyCurriculum:
    def __init__(self, prompts: Iterable[Any] = (), cfg: CurriculumConfig | None = None, *,
                 key: Callable[[Any], Hashable] = _default_key, pool: str = "moderate") -> None:
        self.cfg = cfg or CurriculumConfig()
        self.key = key
        self.stage = 1
        self.steps = 0
        self._prompts: dict[Hashable, Any] = {}
        self._stats: dict[Hashable, PromptStats] = {}
        self._pool: dict[Hashable, str] = {}
        self._rng = random.Random(f"glm45.rl.curriculum/{self.cfg.seed}")
        self._plateau = PlateauDetector(self.cfg.plateau_window, self.cfg.plateau_min_delta)
        self._step_rewards: list[float] = []  # moderate-pool rewards recorded in the current step
        self.last_moderate_reward: float | None = None
        self.add_prompts(prompts, pool)

    # ---- pools -------------------------------------------------------------------------------
    def add_prompts(self, prompts: Iterable[Any], pool: str = "moderate") -> None:
        if pool not in POOLS:
            raise RLError(f"unknown pool {pool!r}; pools: {POOLS}")
        for prompt in prompts:
            pid = self.key(prompt)
            if not isinstance(pid, (str, int)) or isinstance(pid, bool):
                raise RLError(f"prompt ids must be str or int (they go into checkpoints), got {pid!r}")
            if pid in self._prompts:
                raise RLError(f"duplicate prompt id {pid!r}")
            self._prompts[pid] = prompt
            self._stats[pid] = PromptStats()
            self._pool[pid] = pool

    def pool(self, name: str) -> list[Hashable]:
        if name not in POOLS:
            raise RLError(f"unknown pool {name!r}; pools: {POOLS}")
        return [pid for pid, p in self._pool.items() if p == name]

    def pool_of(self, pid: Hashable) -> str:
        return self._pool[self._known(pid)]

    def stats(self, pid: Hashable) -> PromptStats:
        return self._stats[self._known(pid)]

    def sizes(self) -> dict[str, int]:
        out = dict.fromkeys(POOLS, 0)
        for p in self._pool.values():
            out[p] += 1
        return out

    def _known(self, pid: Hashable) -> Hashable:
        if pid not in self._pool:
            raise RLError(f"unknown prompt id {pid!r}")
        return pid

    # ---- drawing prompts (DataSource) -------------------------------------------------------------
    def _least_served(self, pids: list[Hashable], n: int) -> list[Hashable]:
        self._rng.shuffle(pids)
        return sorted(pids, key=lambda pid: self._stats[pid].served)[:n]

    def take(self, n: int) -> list[Any]:
        """Up to `n` distinct prompts: the current stage's pool plus the candidates' share."""
        main = self.pool("moderate" if self.stage == 1 else "hard")
        candidates = self.pool("candidate")
        n_cand = min(len(candidates), round(n * self.cfg.candidate_share))
        chosen = self._least_served(main, n - n_cand)
        chosen += self._least_served(candidates, n - len(chosen))  # candidates fill any shortfall
        for pid in chosen:
            self._stats[pid].served += 1
        return [self._prompts[pid] for pid in chosen]

    # ---- recording rollouts ----------------------------------------------------------------------
    def record(self, pid: Hashable, rewards: Sequence[float]) -> str:
        """Record one prompt's rollout rewards (in generation order); returns its pool after."""
        st = self._stats[self._known(pid)]
        pool = self._pool[pid]
        cfg = self.cfg
        for r in rewards:
            ok = int(r >= cfg.success_threshold)
            if ok and st.first_success is None:
                st.first_success = st.attempts
            st.attempts += 1
            st.successes += ok
            st.recent.append(ok)
        del st.recent[:-cfg.easy_window]
        if pool == "moderate":
            self._step_rewards.extend(float(r) for r in rewards)
        if pool in ("moderate", "candidate"):
            pool = self._classify(st, pool)
        if pool in ("moderate", "hard") and len(st.recent) == cfg.easy_window \
                and sum(st.recent) / cfg.easy_window >= cfg.easy_rate:
            pool = "easy"
        self._pool[pid] = pool
        return pool

    def _classify(self, st: PromptStats, pool: str) -> str:
        k_small, k_large = self.cfg.k_small, self.cfg.k_large
        first = st.first_success
        if first is not None and first < k_small:
            return "moderate"
        if first is not None and first < k_large:
            return "hard"
        if st.attempts >= k_large:
            return "unsolvable"
        if st.attempts >= k_small:
            return "candidate"
        return pool

    def record_group(self, group: Sequence[Sample]) -> str:
        """`record` for a group of samples of one prompt (the prompt's id read with `key`)."""
        if not group:
            raise RLError("cannot record an empty group")
        if any(s.reward is None for s in group):
            raise RLError(f"group {group[0].group_id}: every sample needs a reward to be recorded")
        pid = self.key(group[0].prompt)
        return self.record(pid, [s.reward for s in sorted(group, key=lambda s: s.index)])

    # ---- stages ----------------------------------------------------------------------------------
    def end_step(self) -> bool:
        """Close a training step; returns True when this step switched to stage 2."""
        self.steps += 1
        if self._step_rewards:
            self.last_moderate_reward = sum(self._step_rewards) / len(self._step_rewards)
            self._plateau.update(self.last_moderate_reward)
            self._step_rewards = []
        if self.stage == 1 and self.saturated and len(self.pool("hard")) >= self.cfg.min_hard_prompts:
            self.stage = 2
            return True
        return False

    @property
    def saturated(self) -> bool:
        """Whether the moderate pool has stopped giving useful signal."""
        if not self.pool("moderate"):
            return True
        if self.last_moderate_reward is not None and self.last_moderate_reward >= self.cfg.saturation_reward:
            return True
        return self._plateau.plateaued

    def set_stage(self, stage: int) -> None:
        if stage not in (1, 2):
            raise RLError(f"stage must be 1 or 2, got {stage}")
        self.stage = stage

    # ---- checkpointing -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {
            "stage": self.stage, "steps": self.steps,
            "prompts": [[pid, self._pool[pid], st.attempts, st.successes, st.first_success, list(st.recent), st.served]
                        for pid, st in self._stats.items()],
            "plateau": self._plateau.state_dict(), "step_rewards": list(self._step_rewards),
            "last_moderate_reward": self.last_moderate_reward, "rng": [version, list(internal), gauss],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore into a curriculum built over the same prompts (those added later included)."""
        saved = {row[0] for row in state["prompts"]}
        if saved != set(self._prompts):
            missing, extra = sorted(map(str, saved - set(self._prompts))), sorted(map(str, set(self._prompts) - saved))
            raise RLError(f"curriculum state does not match the prompts: missing {missing[:5]}, "
                          f"not in the state {extra[:5]}")
        for pid, pool, attempts, successes, first, recent, served in state["prompts"]:
            if pool not in POOLS:
                raise RLError(f"curriculum state has unknown pool {pool!r}")
            self._pool[pid] = pool
            self._stats[pid] = PromptStats(attempts, successes, first, list(recent), served)
        self.stage, self.steps = int(state["stage"]), int(state["steps"])
        self._plateau.load_state_dict(state["plateau"])
        self._step_rewards = [float(r) for r in state["step_rewards"]]
        self.last_moderate_reward = state["last_moderate_reward"]
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
