"""Built-in synthetic task families: arithmetic reasoning, tool calling, code writing.

Offline, pure Python and deterministic under a seed; every problem carries its verified
answer (or ground-truth calls, or hidden tests) and a reference solution, so the same tasks
feed pre-training documents, SFT, RL rewards and evaluation. Train / held-out splits are
decided by hashing the question text (``glm45.tasks.common``): no question is in both.

- ``glm45.tasks.arithmetic``: ``generate_arithmetic``, ``to_messages``, ``to_document``, ``check_answer``.
- ``glm45.tasks.tools``: ``generate_tool_tasks``, ``ToolTask``, ``execute_call``, ``validate_call``, ``score_calls``.
- ``glm45.tasks.user_sim``: ``UserSimulator`` for multi-turn tool tasks.
- ``glm45.tasks.code``: ``generate_code_tasks``, ``CodeTask``, ``extract_code``, ``run_python_tests``.
"""

from glm45.tasks.arithmetic import ArithmeticProblem, check_answer, generate_arithmetic
from glm45.tasks.code import CodeTask, extract_code, generate_code_tasks, run_python_tests
from glm45.tasks.common import SPLITS, TaskError, TaskSpaceExhausted, split_of
from glm45.tasks.tool_schema import ToolCallError, validate_call
from glm45.tasks.tool_world import REGISTRY, World, execute_call, tool_schemas
from glm45.tasks.tools import ToolTask, generate_tool_tasks, score_calls
from glm45.tasks.user_sim import UserSimulator

__all__ = [
    "ArithmeticProblem", "check_answer", "generate_arithmetic",
    "CodeTask", "extract_code", "generate_code_tasks", "run_python_tests",
    "SPLITS", "TaskError", "TaskSpaceExhausted", "split_of",
    "ToolCallError", "validate_call", "REGISTRY", "World", "execute_call", "tool_schemas",
    "ToolTask", "generate_tool_tasks", "score_calls", "UserSimulator",
]
