"""An on-disk response cache in front of any backend, so a rerun does not regenerate.

Each sample is stored on its own, keyed by the backend's name, the request's content (messages,
tools, sampling settings, seed — everything in `ChatRequest.identity()`) and the sample index; so a
rerun with a larger k only generates the new samples. Files are written to a temporary name and
renamed, so concurrent runs and crashes never leave a half-written entry.

Log-likelihoods are not cached (one deterministic forward, cheap next to generation): a cached
backend scores text exactly when the backend inside it can, by passing the call through.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from glm45.eval.backend import Backend, ChatRequest, ChatResult, ChatSample, OnResult, supports_loglikelihood

__all__ = ["CachedBackend"]


class CachedBackend:
    def __init__(self, inner: Backend, cache_dir: str | os.PathLike):
        self.inner = inner
        self.name = inner.name
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        if supports_loglikelihood(inner):  # an attribute only then, so the capability check stays truthful
            self.loglikelihood = inner.loglikelihood

    def _path(self, request: ChatRequest, j: int) -> Path:
        key = json.dumps({"backend": self.name, "request": request.identity(), "sample": j},
                         sort_keys=True, ensure_ascii=False)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.dir / digest[:2] / f"{digest}.json"

    def _load(self, path: Path) -> ChatSample | None:
        try:
            return ChatSample.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None  # absent or unreadable: generate again

    def _store(self, path: Path, sample: ChatSample) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(sample.to_dict(), f, ensure_ascii=False)
        os.replace(tmp, path)

    def chat(self, requests: Sequence[ChatRequest], on_result: OnResult | None = None) -> list[ChatResult]:
        samples: list[list[ChatSample | None]] = []
        missing: list[tuple[int, int]] = []  # (request index, sample index) to generate
        for i, request in enumerate(requests):
            row = [self._load(self._path(request, j)) for j in range(request.n)]
            samples.append(row)
            missing += [(i, j) for j, s in enumerate(row) if s is None]
        with self._lock:
            self.misses += len(missing)
            self.hits += sum(r.n for r in requests) - len(missing)
        remaining = [sum(s is None for s in row) for row in samples]
        if on_result is not None:
            for i, left in enumerate(remaining):
                if left == 0:
                    on_result(i, ChatResult(list(samples[i])))

        lock = threading.Lock()

        def store(index: int, result: ChatResult) -> None:
            i, j = missing[index]
            sample = result.samples[0]
            self._store(self._path(requests[i], j), sample)
            with lock:
                samples[i][j] = sample
                remaining[i] -= 1
                done = remaining[i] == 0
            if done and on_result is not None:
                on_result(i, ChatResult(list(samples[i])))

        if missing:
            results = self.inner.chat([requests[i].sample(j) for i, j in missing], on_result=store)
            for index, (i, j) in enumerate(missing):  # a backend that did not report as it went
                if samples[i][j] is None:
                    store(index, results[index])
        return [ChatResult(list(row)) for row in samples]
