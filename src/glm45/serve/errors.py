"""OpenAI-format errors: one exception type for every client-facing failure, and the
conversion of pydantic validation errors into a message that names the offending field.

Every error body has the shape the `openai` client parses:
`{"error": {"message": str, "type": str, "param": str | None, "code": str | None}}`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

# Pieces pydantic adds to an error location that are not field names: the branch of a union
# ("str", "list[TextPart]", "function-after[...]") or the tag of a discriminated union.
_UNION_BRANCHES = {"str", "int", "float", "bool", "dict", "list", "none", "json-or-python"}
_MESSAGE_ROLES = {"system", "developer", "user", "assistant", "tool"}


class APIError(ValueError):
    """A request the server refuses; rendered as an OpenAI error body with `status`."""

    def __init__(self, message: str, *, status: int = 400, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def param_path(loc: tuple) -> str | None:
    """`("messages", 0, "user", "content", "str")` -> `"messages[0].content"`."""
    out = ""
    prev: Any = None
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str):
            is_branch = (part in _UNION_BRANCHES or any(c in part for c in "[]-(")
                         or (isinstance(prev, int) and part in _MESSAGE_ROLES))
            if not is_branch:
                out += f".{part}" if out else part
        prev = part
    return out or None


class FieldError(ValueError):
    """Raised inside a request model's cross-field validator to name the field at fault
    (pydantic reports such errors at the model's own location)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def _param(err: dict) -> str | None:
    cause = (err.get("ctx") or {}).get("error")
    path = param_path(tuple(err["loc"]))
    if isinstance(cause, FieldError):
        return f"{path}.{cause.param}" if path else cause.param
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # name the tag field itself
        tag = str((err.get("ctx") or {}).get("discriminator", "")).strip("'")
        return f"{path}.{tag}" if path and tag else path
    return path


def from_validation_error(exc: ValidationError) -> APIError:
    """The first failing field, with every distinct complaint about it (union branches give
    several). A plain type mismatch is reported only when no branch says something more specific."""
    errors = exc.errors(include_url=False)
    specific = [e for e in errors if not str(e["type"]).endswith("_type")]
    if specific:
        errors = specific + [e for e in errors if e not in specific]
    first = _param(errors[0])
    msgs: list[str] = []
    for err in errors:
        if _param(err) == first and _clean_msg(err["msg"]) not in msgs:
            msgs.append(_clean_msg(err["msg"]))
    where = first or "request body"
    extra = len({_param(e) for e in errors}) - 1
    tail = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra > 0 else ""
    return APIError(f"Invalid value for '{where}': {'; or '.join(msgs)}{tail}", param=first,
                    code=str(errors[0]["type"]))


def _clean_msg(msg: str) -> str:
    # Messages from our own validators arrive as "Value error, <text>".
    return msg.removeprefix("Value error, ")
