"""The unified HTTP endpoint for agent frameworks (paper §3.5).

Most agent frameworks produce message lists. An agent runs its own episode (against any
OpenAI-compatible server of the current policy, e.g. `glm45 serve` or the rollout engines),
then posts the trajectory and its reward; the endpoint tokenises it with the chat encoding
(`glm45.chat.encode_chat`: the exact ids inference sees, assistant tokens trained, system / user
/ tool tokens masked), gathers `group_size` trajectories of the same prompt into a GRPO group
and hands complete groups to the data buffer, where the trainer picks them up. Their rollout
logprobs are recomputed by the trainer.

Routes:
  POST /v1/trajectories  {"messages": [...], "reward": float, "group": str | "group_id": int,
                          "tools"?: [...], "enable_thinking"?: bool, "weight_version"?: int,
                          "task"?: any}  -> {"status": "pending"|"accepted"|"dropped", ...}
  GET  /v1/tasks?n=N     prompts drawn from the buffer's source, each with its group_id
  GET  /v1/status        weight version, buffered and pending groups, counters
  GET  /health

A trajectory names its group either by the `group_id` a `/v1/tasks` prompt came with or by any
string `group` of its own (e.g. the task id); string groups get negative ids, so they never
collide with the buffer's.
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' parameter types at run time.
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from glm45.rl.errors import RLError
from glm45.rl.sample import Sample

__all__ = ["TrajectoryCollector", "create_app", "trajectory_to_sample"]


def trajectory_to_sample(tokenizer: Any, messages: Sequence[Mapping[str, Any]], reward: float, *,
                         tools: Sequence[Mapping] | None = None, enable_thinking: bool = True, group_id: int = 0,
                         index: int = 0, weight_version: int = 0, task: Any = None) -> Sample:
    """A message-list trajectory as a Sample: everything before the first assistant token is the
    prompt; from there on, assistant tokens are trained and the rest (tool results, user turns)
    masked."""
    from glm45.chat import ChatFormatError, encode_chat

    if not isinstance(reward, (int, float)) or isinstance(reward, bool):
        raise RLError(f"reward must be a number, got {reward!r}")
    try:
        ids, mask = encode_chat(tokenizer, list(messages), list(tools) if tools else None,
                                enable_thinking=enable_thinking)
    except (ChatFormatError, KeyError, TypeError, ValueError) as e:
        raise RLError(f"cannot encode the trajectory with the chat template: {e}") from None
    if 1 not in mask:
        raise RLError("the trajectory has no assistant turn to train on")
    first = mask.index(1)
    start = next(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    prompt = task if task is not None else {"messages": [dict(m) for m in messages[:start]],
                                            "tools": list(tools or [])}
    return Sample(prompt_ids=ids[:first], response_ids=ids[first:], loss_mask=mask[first:], reward=float(reward),
                  group_id=group_id, index=index, weight_version=weight_version, prompt=prompt,
                  response_text=tokenizer.decode(ids[first:]))


class TrajectoryCollector:
    """Gathers posted trajectories into groups; `sink(group) -> kept` receives each complete one
    (by default the buffer's `add_group`)."""

    def __init__(self, tokenizer: Any, group_size: int, sink: Callable[[list[Sample]], bool], *,
                 version: Callable[[], int] = lambda: 0) -> None:
        if group_size < 1:
            raise RLError(f"group_size must be >= 1, got {group_size}")
        self.tokenizer = tokenizer
        self.group_size = group_size
        self.sink = sink
        self.version = version
        self._lock = threading.Lock()
        self._pending: dict[int, list[Sample]] = {}
        self._named: dict[str, int] = {}
        self.counters = {"trajectories": 0, "groups_accepted": 0, "groups_dropped": 0}

    def _group_id(self, payload: Mapping[str, Any]) -> int:
        if "group_id" in payload:
            gid = payload["group_id"]
            if not isinstance(gid, int) or isinstance(gid, bool) or gid < 0:
                raise RLError(f"group_id must be a non-negative int from /v1/tasks, got {gid!r}")
            return gid
        name = payload.get("group")
        if not isinstance(name, str) or not name:
            raise RLError("a trajectory needs 'group_id' (from /v1/tasks) or a 'group' name shared by the "
                          f"{self.group_size} trajectories of one prompt")
        if name not in self._named:
            self._named[name] = -1 - len(self._named)
        return self._named[name]

    def add(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(payload, Mapping):
            raise RLError("a trajectory is a JSON object")
        messages = payload.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise RLError("'messages' must be a list of chat messages")
        if "reward" not in payload:
            raise RLError("the trajectory has no 'reward'")
        version = payload.get("weight_version", self.version())
        if not isinstance(version, int) or isinstance(version, bool):
            raise RLError(f"weight_version must be an int, got {version!r}")
        with self._lock:
            gid = self._group_id(payload)
        sample = trajectory_to_sample(self.tokenizer, messages, payload["reward"], tools=payload.get("tools"),
                                      enable_thinking=bool(payload.get("enable_thinking", True)), group_id=gid,
                                      weight_version=version, task=payload.get("task"))
        with self._lock:
            group = self._pending.setdefault(gid, [])
            sample.index = len(group)
            group.append(sample)
            self.counters["trajectories"] += 1
            if len(group) < self.group_size:
                return {"status": "pending", "group_id": gid, "received": len(group), "needed": self.group_size}
            del self._pending[gid]
            for name, g in list(self._named.items()):
                if g == gid:
                    del self._named[name]  # the name may start a fresh group later
        kept = self.sink(group)
        with self._lock:
            self.counters["groups_accepted" if kept else "groups_dropped"] += 1
        return {"status": "accepted" if kept else "dropped", "group_id": gid, "received": len(group),
                "needed": self.group_size}

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"pending_groups": len(self._pending), "weight_version": self.version(), **self.counters}


def create_app(collector: TrajectoryCollector, *, buffer: Any = None, api_key: str | None = None):
    """The FastAPI app. With `buffer`, `/v1/tasks` hands out its prompts and `/v1/status` reports it."""
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="glm45 RL agent endpoint")

    async def check_key(request: Request) -> None:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            raise HTTPException(status_code=401, detail="invalid or missing API key")

    @app.exception_handler(RLError)
    async def _bad(_: Request, exc: RLError) -> JSONResponse:
        return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error"}}, status_code=400)

    @app.post("/v1/trajectories", dependencies=[Depends(check_key)])
    async def post_trajectory(request: Request):
        import anyio

        try:
            payload = await request.json()
        except ValueError:
            raise RLError("the body is not JSON") from None
        # Tokenising and the sink (buffer filters) may take a while: off the event loop.
        return await anyio.to_thread.run_sync(collector.add, payload)

    @app.get("/v1/tasks", dependencies=[Depends(check_key)])
    async def tasks(n: int = 1):
        if buffer is None:
            raise RLError("this endpoint has no prompt source; post trajectories with your own 'group' names")
        if not 1 <= n <= 1024:
            raise RLError(f"n must lie in [1, 1024], got {n}")
        items = buffer.next_prompts(n)
        return {"tasks": [{"group_id": it.group_id, "task": it.prompt, "group_size": collector.group_size}
                          for it in items]}

    @app.get("/v1/status", dependencies=[Depends(check_key)])
    async def status():
        out = collector.status()
        if buffer is not None:
            out["buffer_groups"] = len(buffer)
            out["buffer_stats"] = buffer.stats
        return out

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    return app
