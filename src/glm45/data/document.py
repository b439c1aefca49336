"""The unit every pipeline step consumes and produces: a `Document`, and its JSONL form.

A document is plain text with metadata (source, language, path, repo, ...). Chat samples
(SFT data, agent trajectories, synthetic reasoning) carry `messages` (OpenAI format) and
optionally `tools` instead of being flattened to text, so tokenisation can render them with
the chat template and keep a loss mask. Every step streams: functions take and return
iterators, so a corpus never has to fit in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator


class DataError(ValueError):
    """Bad data-pipeline input: a malformed file, record, spec or argument."""


@dataclass
class Document:
    text: str
    id: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] | None = None  # chat sample (loss-masked when tokenised)
    tools: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.id:
            self.id = content_id(self.text if self.messages is None else json.dumps(self.messages, sort_keys=True))

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    @property
    def num_chars(self) -> int:
        """Characters of text, or of message contents and reasoning for chat samples."""
        if self.messages is None:
            return len(self.text)
        return sum(len(str(m.get("content") or "")) + len(str(m.get("reasoning_content") or "")) for m in self.messages)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "text": self.text, "source": self.source}
        if self.meta:
            out["meta"] = self.meta
        if self.messages is not None:
            out["messages"] = self.messages
        if self.tools is not None:
            out["tools"] = self.tools
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, text_field: str = "text", where: str = "record") -> "Document":
        if not isinstance(d, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(d).__name__}")
        messages = d.get("messages")
        if messages is not None and not isinstance(messages, list):
            raise DataError(f"{where}: 'messages' must be a list of chat messages")
        text = d.get(text_field)
        if text is None and messages is None:
            raise DataError(f"{where}: has neither a '{text_field}' field nor 'messages' (keys: {sorted(d)[:10]})")
        if text is not None and not isinstance(text, str):
            raise DataError(f"{where}: field '{text_field}' must be a string, got {type(text).__name__}")
        known = {"id", text_field, "source", "meta", "messages", "tools"}
        meta = dict(d.get("meta") or {})
        meta.update({k: v for k, v in d.items() if k not in known})  # keep unknown fields as metadata
        return cls(
            text=text or "",
            id=str(d.get("id") or ""),
            source=str(d.get("source") or ""),
            meta=meta,
            messages=messages,
            tools=d.get("tools"),
        )


def content_id(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


def _open_text(path: str | os.PathLike, mode: str = "rt") -> io.TextIOBase:
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def read_documents(path: str | os.PathLike, *, text_field: str = "text") -> Iterator[Document]:
    """Stream documents from a JSONL file (optionally .gz), one JSON object per line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such JSONL file")
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            yield Document.from_dict(record, text_field=text_field, where=f"{path}:{lineno}")


def write_documents(docs: Iterable[Document], path: str | os.PathLike) -> int:
    """Write documents as JSONL (atomically: a temporary name, then a rename). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-" + path.name)  # keeps the suffix, so .gz stays gzip
    n = 0
    with _open_text(tmp, "wt") as f:
        for doc in docs:
            f.write(json.dumps(doc.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
