"""SFT samples: OpenAI-style conversations as `glm45.data.Document`s, and their thinking mode.

One JSONL line is one sample:

    {"id": "...", "messages": [{"role": "system"|"user"|"assistant"|"tool", ...}, ...],
     "tools": [...],                 # optional, OpenAI tool schemas
     "enable_thinking": true,        # optional: force the mode (else drawn, see below)
     "meta": {...}}                  # optional: domain, answer, tests, task... (rejection sampling)

Assistant messages may carry `reasoning_content` and `tool_calls`; they are what SFT trains.
`read_samples` reuses the data pipeline's JSONL reader (unknown top-level fields land in
`meta`), and `check_sample` rejects what cannot train.

Hybrid reasoning (paper §3.1, Overall SFT): a sample is rendered either in thinking mode (its
reasoning between <think> tags, trained) or non-thinking mode (enable_thinking=False: `/nothink`
on user turns, the empty think block supplied by the prompt, no reasoning anywhere).
`thinking_mode` decides per sample: an explicit `enable_thinking` wins, otherwise a hash of the
sample id and the seed puts a `non_thinking_ratio` fraction in non-thinking mode, the same
way on every run and every rank.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from glm45.chat import ChatFormatError, normalize_messages
from glm45.data.document import DataError, Document, read_documents

REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


class SFTError(ValueError):
    """Bad SFT input: a malformed sample, file, option or checkpoint."""


def read_samples(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[Document]:
    """Stream chat samples from one or more JSONL files (optionally .gz)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for path in paths:
        try:
            for doc in read_documents(path):
                if not doc.is_chat:
                    raise SFTError(f"{path}: sample {doc.id!r} has no 'messages' (SFT needs chat samples)")
                yield doc
        except DataError as e:
            raise SFTError(str(e)) from None


def sample_document(record: dict[str, Any]) -> Document:
    """A Document from a sample dict (the JSONL form, already parsed)."""
    try:
        return Document.from_dict(record, where=f"sample {record.get('id', '?')!r}")
    except DataError as e:
        raise SFTError(str(e)) from None


def check_sample(doc: Document) -> list[dict[str, Any]]:
    """The sample's messages, normalised; raises SFTError when it cannot train (not chat, bad
    messages, or no assistant turn to learn from)."""
    if not doc.is_chat:
        raise SFTError(f"sample {doc.id!r} has no 'messages'")
    try:
        messages = normalize_messages(doc.messages)
    except ChatFormatError as e:
        raise SFTError(f"sample {doc.id!r}: {e}") from None
    if not any(m["role"] == "assistant" for m in messages):
        raise SFTError(f"sample {doc.id!r} has no assistant message (nothing to train on)")
    if doc.tools is not None and not isinstance(doc.tools, list):
        raise SFTError(f"sample {doc.id!r}: 'tools' must be a list of tool schemas")
    return messages


def _unit_hash(*parts: object) -> float:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def thinking_mode(doc: Document, non_thinking_ratio: float, seed: int = 0) -> bool:
    """True to render the sample with thinking on. `enable_thinking` in the sample wins."""
    if not 0.0 <= non_thinking_ratio <= 1.0:
        raise SFTError(f"non_thinking_ratio must lie in [0, 1], got {non_thinking_ratio}")
    forced = doc.meta.get("enable_thinking")
    if forced is not None:
        if not isinstance(forced, bool):
            raise SFTError(f"sample {doc.id!r}: enable_thinking must be true or false, got {forced!r}")
        return forced
    return _unit_hash("thinking", seed, doc.id) >= non_thinking_ratio


def strip_reasoning(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the messages without any reasoning (fields, or <think> blocks written inline in
    an assistant's content), as a non-thinking sample must be."""
    out = []
    for m in messages:
        m = {k: copy.deepcopy(v) for k, v in m.items() if not (m.get("role") == "assistant" and k in REASONING_KEYS)}
        content = m.get("content")
        if m.get("role") == "assistant" and isinstance(content, str) and "</think>" in content:
            m["content"] = content.split("</think>")[-1].lstrip("\n")
        out.append(m)
    return out


def with_thinking_mode(doc: Document, non_thinking_ratio: float, seed: int = 0) -> Document:
    """The sample with `meta["enable_thinking"]` decided; non-thinking samples lose their reasoning."""
    thinking = thinking_mode(doc, non_thinking_ratio, seed)
    messages = doc.messages if thinking else strip_reasoning(doc.messages or [])
    return Document(text=doc.text, id=doc.id, source=doc.source, meta={**doc.meta, "enable_thinking": thinking},
                    messages=messages, tools=doc.tools)


def assistant_text(message: dict[str, Any]) -> str:
    """What an assistant message says: reasoning, content and tool calls, for length and
    repetition checks."""
    parts = [str(message.get(k) or "") for k in ("reasoning_content", "content")]
    for call in message.get("tool_calls") or []:
        fn = call.get("function", call) if isinstance(call, dict) else {}
        parts.append(f"{fn.get('name', '')} {fn.get('arguments', '')}")
    return "\n".join(p for p in parts if p)
