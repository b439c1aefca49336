"""A rule-based simulated user for multi-turn tool tasks.

The paper's multi-turn function-calling RL lets an LLM play the user; at our scale a rule is
enough: the user knows the information the first message left out (``ToolTask.followups``)
and gives it when the assistant asks a question about it. A reply that asks nothing ends the
dialogue; so does running out of turns.
"""

from __future__ import annotations

import re

from glm45.tasks.common import TaskError
from glm45.tasks.tools import ToolTask


class UserSimulator:
    """``respond(assistant_message)`` -> the next user message (OpenAI dict), or None when done.

    A question (a ``?``) that mentions a follow-up's keywords gets that follow-up's reply; a
    question that mentions none of them gets every follow-up still pending (a real user would
    just say what is missing); a question once nothing is pending gets a short "that's all".
    """

    def __init__(self, task: ToolTask, max_turns: int = 3) -> None:
        self.task = task
        self.max_turns = max_turns
        self.pending = list(task.followups)
        self.turns = 0

    def first_message(self) -> dict:
        return {"role": "user", "content": self.task.user}

    @property
    def informed(self) -> bool:
        """Whether the user has given everything the task needs."""
        return not self.pending

    def respond(self, assistant_message: dict | str) -> dict | None:
        if isinstance(assistant_message, dict):
            if assistant_message.get("tool_calls"):
                raise TaskError("tool calls are answered by the tools (execute_call), not by the user")
            text = assistant_message.get("content") or ""
        elif isinstance(assistant_message, str):
            text = assistant_message
        else:
            raise TaskError(f"assistant_message must be a dict or str, got {type(assistant_message).__name__}")
        if "?" not in text or self.turns >= self.max_turns:
            return None
        self.turns += 1
        lowered = text.casefold()
        asked = [f for f in self.pending
                 if any(re.search(rf"\b{re.escape(k)}\b", lowered) for k in f["keywords"])] or list(self.pending)
        if not asked:
            return {"role": "user", "content": "That's all I need, thanks."}
        for f in asked:
            self.pending.remove(f)
        return {"role": "user", "content": " ".join(f["reply"] for f in asked)}
