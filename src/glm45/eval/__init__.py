"""Evaluation harness: tasks (JSONL or built in), scorers, and a runner over a local model or any
OpenAI-compatible endpoint. `glm45 eval` is the command line; see glm45.eval.tasks for the task
record schemas and glm45.eval.backend for the backend protocol."""

from glm45.eval.agent import register_environment
from glm45.eval.backend import (Backend, BackendError, ChatRequest, ChatResult, ChatSample, EvalError,
                                LoglikelihoodBackend, LoglikelihoodRequest, LoglikelihoodResult)
from glm45.eval.cache import CachedBackend
from glm45.eval.kinds import Sampling
from glm45.eval.openai_backend import OpenAIBackend
from glm45.eval.runner import evaluate
from glm45.eval.tasks import Task, list_tasks, make_task, register_task, resolve_task

__all__ = ["Backend", "BackendError", "CachedBackend", "ChatRequest", "ChatResult", "ChatSample", "EvalError",
           "LoglikelihoodBackend", "LoglikelihoodRequest", "LoglikelihoodResult", "OpenAIBackend", "Sampling",
           "Task", "evaluate", "list_tasks", "make_task", "register_environment", "register_task",
           "resolve_task"]
