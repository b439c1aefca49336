"""Tokenising documents for packing.

Text documents become their token ids plus <|endoftext|> (the separator the concat packer
relies on and the stop token the model learns). Chat samples are rendered with the GLM-4.5
chat template through `glm45.chat.encode_chat`, which also returns the loss mask (1 on the
assistant's tokens): SFT reuses the packed loader through that mask. With
`chat_loss="all"` a chat sample trains on every token, as mid-training on agent
trajectories may want.

The tokenizer is a `GLMTokenizer` (a raw `tokenizers.Tokenizer` holding the GLM special tokens
is wrapped in one); text documents are encoded in batches with `encode_batch` (parallel inside
`tokenizers`) when the tokenizer has it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

from glm45.data.document import DataError, Document
from glm45.data.packing import TokenizedDoc
from glm45.tokenizer.special import EOS_TOKEN, STOP_TOKENS


def as_tokenizer(tok: Any) -> Any:
    """A GLMTokenizer for a raw `tokenizers.Tokenizer`; anything else is used as given."""
    from tokenizers import Tokenizer

    if not isinstance(tok, Tokenizer):
        return tok
    from glm45.tokenizer import GLMTokenizer, TokenizerError

    try:
        return GLMTokenizer(tok)
    except TokenizerError as e:
        raise DataError(f"cannot use this tokenizer for the data pipeline: {e}") from None


@dataclass
class DocumentTokenizer:
    tokenizer: Any
    append_eos: bool = True
    enable_thinking: bool = True
    chat_loss: str = "assistant"  # "assistant": loss on assistant tokens only; "all": every token
    batch_size: int = 256
    docs: int = 0
    tokens: int = 0
    tokens_by_source: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.chat_loss not in ("assistant", "all"):
            raise DataError(f"chat_loss must be 'assistant' or 'all', got {self.chat_loss!r}")
        self.tokenizer = as_tokenizer(self.tokenizer)
        try:
            self.eos_id = self.tokenizer.token_to_id(EOS_TOKEN)
            self.stop_ids = {self.tokenizer.token_to_id(t) for t in STOP_TOKENS}
        except ValueError as e:
            raise DataError(f"tokenizer lacks a GLM special token: {e}") from None

    def apply(self, docs: Iterable[Document]) -> Iterator[TokenizedDoc]:
        batch: list[Document] = []
        for doc in docs:
            if doc.is_chat:
                yield from self._text_batch(batch)
                batch = []
                yield self._count(self._chat(doc))
            else:
                batch.append(doc)
                if len(batch) == self.batch_size:
                    yield from self._text_batch(batch)
                    batch = []
        yield from self._text_batch(batch)

    def _count(self, t: TokenizedDoc) -> TokenizedDoc:
        self.docs += 1
        self.tokens += len(t.ids)
        self.tokens_by_source[t.source] += len(t.ids)
        return t

    def _text_batch(self, batch: list[Document]) -> Iterator[TokenizedDoc]:
        if not batch:
            return
        texts = [d.text for d in batch]
        if hasattr(self.tokenizer, "encode_batch"):
            encoded = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        else:
            encoded = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        for doc, ids in zip(batch, encoded):
            arr = np.empty(len(ids) + self.append_eos, np.int64)
            arr[:len(ids)] = ids
            if self.append_eos:
                arr[-1] = self.eos_id
            yield self._count(TokenizedDoc(arr, None, doc.source))

    def _chat(self, doc: Document) -> TokenizedDoc:
        from glm45.chat import encode_chat

        thinking = bool(doc.meta.get("enable_thinking", self.enable_thinking))
        try:
            ids, mask = encode_chat(self.tokenizer, doc.messages, doc.tools, enable_thinking=thinking)
        except ValueError as e:
            raise DataError(f"chat sample {doc.id}: {e}") from None
        ids = list(ids)
        mask = [int(m) for m in mask]
        if self.append_eos and (not ids or ids[-1] not in self.stop_ids):
            # The template has no end-of-turn token: after a final assistant turn the model must
            # learn to stop, so the appended <|endoftext|> is trained exactly when that turn is.
            ids.append(self.eos_id)
            mask.append(mask[-1] if mask else 0)
        arr = np.asarray(ids, np.int64)
        if self.chat_loss == "all":
            return TokenizedDoc(arr, None, doc.source)
        return TokenizedDoc(arr, np.asarray(mask, np.uint8), doc.source)
