"""Built-in SFT data from the synthetic task families of `glm45.tasks`, by expert domain.

- reasoning: arithmetic (worked steps as reasoning, `\\boxed{}` answer; verified with math-verify)
  and Python function tasks (verified by their hidden tests in the sandbox);
- agent: tool tasks of every kind (single, multi-step, parallel, irrelevant, multi-turn) with
  their tools; verified by the call protocol and the terminal state;
- general: short questions answered directly (capitals, spelling, counting, greetings), scored
  by the reward-model hook against a reference answer;
- search: multi-hop questions over the synthetic document collection, answered by researching it
  with the search tools; the trajectories are played by the scripted `NoisySearcher` through
  `SearchEnv` (deliberately imperfect: wasted actions and some wrong answers; noise 0 is the
  oracle), verified by the final answer.

`reference_samples` gives training samples with reference answers (the cold start of each expert);
`prompt_samples` gives the same problems as prompts (messages ending with the user's turn, with
what the verifiers need in `meta`) for sampling from a model; agent prompts are `AgentTask`s
(`agent_tasks`), since they are played out as episodes.
"""

from __future__ import annotations

from glm45.data.document import Document
from glm45.sft.agentic.tasks import AgentTask, builtin_tasks
from glm45.sft.agentic.toolkit import Toolkit
from glm45.sft.records import SFTError
from glm45.tasks import generate_arithmetic, generate_code_tasks, generate_tool_tasks
from glm45.tasks.arithmetic import to_messages as arithmetic_messages

DOMAINS = ("reasoning", "agent", "general", "search")
AGENT_KINDS = ("single", "multi", "parallel", "irrelevant", "multiturn")


def _code_test(task) -> dict:
    """A code task's hidden asserts as a HumanEval-style record for glm45.eval.coding.run_tests."""
    body = "\n".join("    " + line for line in task.tests.strip().splitlines())
    return {"prompt": "", "entry_point": task.entry_point, "test": f"def check(candidate):\n{body}\n"}


def _reasoning(n: int, seed: int, split: str, difficulty, code_fraction: float, thinking: bool) -> list[Document]:
    n_code = round(n * code_fraction)
    docs = []
    for p in generate_arithmetic(n - n_code, seed, difficulty, split=split):
        meta = {"domain": "reasoning", "verifier": "math", "answer": p.answer}
        docs.append(Document(text="", id=p.id, source="arithmetic", meta=meta,
                             messages=arithmetic_messages(p, thinking=thinking)))
    for t in generate_code_tasks(n_code, seed, split=split, difficulty=1) if n_code else []:
        meta = {"domain": "reasoning", "verifier": "code", "code_test": _code_test(t)}
        docs.append(Document(text="", id=t.id, source="code", meta=meta, messages=t.to_messages(thinking=thinking)))
    return docs


def _general(n: int, seed: int, split: str) -> list[Document]:
    docs = []
    for t in generate_tool_tasks(n, seed, kinds=("irrelevant",), split=split):
        meta = {"domain": "general", "verifier": "reward", "reference": t.answer, "require_reasoning": False}
        messages = [{"role": "user", "content": t.user}, {"role": "assistant", "content": t.answer}]
        docs.append(Document(text="", id=t.id.replace("tool", "general", 1), source="general", meta=meta,
                             messages=messages))
    return docs


def agent_tasks(n: int, seed: int, split: str = "train", kinds=AGENT_KINDS, n_distractors: int = 2) -> list[AgentTask]:
    return builtin_tasks(n, seed, kinds, split=split, n_distractors=n_distractors)


def _agent(n: int, seed: int, split: str, thinking: bool, kinds, n_distractors: int) -> list[Document]:
    docs, kit = [], Toolkit.builtin()
    for task in agent_tasks(n, seed, split, kinds, n_distractors):
        messages = task.reference if thinking else [
            {k: v for k, v in m.items() if k != "reasoning_content"} for m in task.reference]
        meta = {"domain": "agent", "verifier": "tool", "task": task.to_dict(), "require_reasoning": False}
        docs.append(Document(text="", id=task.id, source="agent", meta=meta, messages=messages,
                             tools=kit.schemas(task.tools)))
    return docs


def search_questions(n: int, seed: int, split: str = "train", max_hops: int = 3,
                     max_turns: int = 8, world_scale: int = 1) -> list[dict]:
    """`n` distinct `search` task records (`glm45.rl.task_sets.search_tasks`) of at most `max_hops`
    hops whose question names its start entity. No question is obfuscated: the scripted
    searchers look their start up by the hidden name, a move a model reading the question cannot
    learn. The synthetic graph has 420 facts times `world_scale`, so there are about 340 train
    and 80 test questions of one hop per unit of scale."""
    from glm45.envs.kg import KGError
    from glm45.rl.errors import RLError
    from glm45.rl.task_sets import search_tasks

    try:
        return search_tasks(n, seed, split=split, max_turns=max_turns, unique=True,
                            collection_options=_world_options(world_scale),
                            question_options={"hops": tuple(range(1, max_hops + 1)), "obfuscate": 0.0})
    except (KGError, RLError) as e:
        raise SFTError(f"the synthetic collection (scale {world_scale}) cannot give {n} {split} search questions "
                       f"of <= {max_hops} hops that name their start: {e}") from None


def _world_options(scale: int) -> dict:
    # scale 1 adds no option, so its tasks' env_config (and the collection cache key) stay as before
    return {} if scale == 1 else {"scale": scale}


def _search(n: int, seed: int, split: str, noise: float, repeats: int, max_hops: int,
            max_turns: int, query: str, read_snippets: bool, world_scale: int, wrong: float,
            wrong_answer: str, guess: float) -> list[Document]:
    from glm45.envs.base import ScriptedPolicy, make_env, run_episodes
    from glm45.envs.search import SEARCH_TOOLS, NoisySearcher, builtin_collection

    questions = search_questions(n, seed, split, max_hops, max_turns, world_scale)
    collection = builtin_collection("synthetic", 0, **_world_options(world_scale))
    docs = []
    for r in range(repeats):  # each repeat wastes different actions (the searcher is seeded per task)
        policy = ScriptedPolicy(lambda t: NoisySearcher(t, collection, noise=noise, wrong=wrong, seed=seed + 7919 * r,
                                                        query=query, read_snippets=read_snippets,
                                                        wrong_answer=wrong_answer, guess=guess))
        envs = [make_env("search", **q["env_config"]) for q in questions]
        for q, result in zip(questions, run_episodes(envs, questions, policy)):
            if result.info.get("end") != "done":  # cut off before answering: no answer to imitate
                continue
            meta = {"domain": "search", "verifier": "answer", "answer": q["answer"], "correct": result.reward == 1.0,
                    "require_reasoning": False, "enable_thinking": False}
            docs.append(Document(text="", id=f"{q['id']}/{r}", source="search", meta=meta,
                                 messages=result.messages, tools=SEARCH_TOOLS))
    return docs


def reference_samples(domain: str, n: int, seed: int, *, split: str = "train", difficulty=(1, 2),
                      code_fraction: float = 0.0, thinking: bool = True, agent_kinds=AGENT_KINDS,
                      n_distractors: int = 2, search_noise: float = 0.4, search_repeats: int = 1,
                      max_hops: int = 3, max_turns: int = 8, search_query: str = "entity",
                      search_snippets: bool = False, search_world_scale: int = 1,
                      search_wrong: float = 0.1, search_wrong_answer: str = "random",
                      search_guess: float = 0.0) -> list[Document]:
    """`n` training samples of `domain` with reference answers. Search: `n` questions (over the
    synthetic world at `search_world_scale`), each played `search_repeats` times by a searcher
    wasting a `search_noise` fraction of its actions, answering wrong a `search_wrong` fraction
    of the time (with a random page's title, or with `search_wrong_answer="subject"` the question's
    own subject) and, a `search_guess` fraction, at once before searching, and searching first
    for the start entity or, with `search_query="question"`, the question itself
    (`search_snippets`: answering from result snippets when they state the fact); an episode cut
    off at `max_turns` is dropped, so there may be fewer samples."""
    if domain == "reasoning":
        return _reasoning(n, seed, split, difficulty, code_fraction, thinking)
    if domain == "agent":
        return _agent(n, seed, split, thinking, agent_kinds, n_distractors)
    if domain == "general":
        return _general(n, seed, split)
    if domain == "search":
        return _search(n, seed, split, search_noise, search_repeats, max_hops, max_turns, search_query,
                       search_snippets, search_world_scale, search_wrong, search_wrong_answer, search_guess)
    raise SFTError(f"domain must be one of {DOMAINS}, got {domain!r}")


def prompt_samples(domain: str, n: int, seed: int, *, split: str = "train", difficulty=(1, 2),
                   code_fraction: float = 0.0, enable_thinking: bool = True) -> list[Document]:
    """The reasoning or general problems as prompts (the reference answer removed)."""
    if domain == "agent":
        raise SFTError("agent prompts are AgentTasks played out as episodes: use agent_tasks()")
    if domain == "search":
        raise SFTError("search prompts are played out as episodes in the search environment: use search_questions()")
    out = []
    for d in reference_samples(domain, n, seed, split=split, difficulty=difficulty, code_fraction=code_fraction):
        out.append(Document(text="", id=d.id, source=d.source, meta={**d.meta, "enable_thinking": enable_thinking},
                            messages=[m for m in d.messages if m["role"] != "assistant"], tools=d.tools))
    return out
