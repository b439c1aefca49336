"""SFT samples -> token ids with assistant-only loss masks -> best-fit packed shards.

Encoding is `glm45.chat.encode_chat`: the ids of the rendered conversation and a mask of the
tokens the assistant produced (its turns after <|assistant|>, and the stop token that ends each).

Multi-turn samples: the chat template keeps an assistant's reasoning only after the *last* user
message, so a conversation whose earlier turns have reasoning would train those turns with an
empty think block — teaching the model to skip thinking. With `split_turns` such a conversation
becomes one sample per user turn (the conversation up to the next user message), each trained
only on the assistant turns after its last user message; every turn is then trained once, with
its reasoning, exactly as it is rendered at inference.

Packing reuses the data pipeline: `glm45.data.packing.Packer` in best-fit mode (no sample is
cut; a sample longer than `seq_len` is dropped and counted, since a chunk without its prompt
teaches nothing), `ShardWriter` on disk, and `PackedLoader` in training, whose rows carry
segment ids and per-sample positions so packed samples never attend to each other.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from glm45.chat import encode_chat
from glm45.data.document import Document
from glm45.data.packing import Packer, TokenizedDoc
from glm45.data.shards import ShardWriter
from glm45.sft.records import SFTError, check_sample, strip_reasoning, with_thinking_mode


@dataclass
class SFTDataConfig:
    seq_len: int = 2048
    non_thinking_ratio: float = 0.0  # fraction of samples rendered with thinking off
    seed: int = 0
    split_turns: bool = True
    window_tokens: int | None = None  # best-fit packing window (default: the packer's)
    rows_per_shard: int = 8192

    def __post_init__(self) -> None:
        if self.seq_len < 16:
            raise SFTError(f"seq_len must be >= 16, got {self.seq_len}")
        if not 0.0 <= self.non_thinking_ratio <= 1.0:
            raise SFTError(f"non_thinking_ratio must lie in [0, 1], got {self.non_thinking_ratio}")


@dataclass
class DataStats:
    samples: int = 0  # read
    thinking: int = 0
    non_thinking: int = 0
    encoded: int = 0  # sequences after turn splitting
    dropped_invalid: int = 0
    dropped_overlong: int = 0
    dropped_untrained: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    invalid_examples: list[str] = field(default_factory=list)  # the first few reasons

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["non_thinking_fraction"] = self.non_thinking / max(1, self.thinking + self.non_thinking)
        d["trained_fraction"] = self.trained_tokens / max(1, self.tokens)
        return d


def turn_ends(messages: list[dict[str, Any]], split: bool) -> list[int]:
    """End indices (exclusive) of the sequences a conversation becomes: just its length, or with
    `split`, also each later user message that follows assistant turns with reasoning."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    ends = []
    if split:
        for u, nxt in itertools.pairwise(users):
            if any(m["role"] == "assistant" and m.get("reasoning_content") for m in messages[u + 1:nxt]):
                ends.append(nxt)
    return ends + [len(messages)]


def encode_sample(tokenizer, doc: Document, split_turns: bool = True) -> list[TokenizedDoc]:
    """Token ids and loss masks of one sample (several when its turns are split)."""
    messages = check_sample(doc)
    thinking = doc.meta.get("enable_thinking", True) is not False
    if not thinking:
        messages = strip_reasoning(messages)
    ends = turn_ends(messages, split_turns and thinking)
    out = []
    for end in ends:
        part = messages[:end]
        ids, mask = encode_chat(tokenizer, part, doc.tools, enable_thinking=thinking)
        if len(ends) > 1:
            last_user = max((i for i, m in enumerate(part) if m["role"] == "user"), default=-1)
            if last_user >= 0:
                prompt_ids, _ = encode_chat(tokenizer, part[:last_user + 1], doc.tools, enable_thinking=thinking)
                # The prompt's ids are a prefix (the next token is the special <|assistant|>).
                if ids[:len(prompt_ids)] != prompt_ids:
                    raise SFTError(f"sample {doc.id!r}: prompt tokens are not a prefix of the conversation's")
                mask[:len(prompt_ids)] = [0] * len(prompt_ids)
        out.append(TokenizedDoc(np.asarray(ids, np.int64), np.asarray(mask, np.uint8), doc.source or doc.id))
    return out


def encode_samples(docs: Iterable[Document], tokenizer, config: SFTDataConfig,
                   stats: DataStats | None = None) -> Iterator[TokenizedDoc]:
    """Thinking mode, encoding and the drop rules over a stream of samples."""
    stats = stats if stats is not None else DataStats()
    for doc in docs:
        stats.samples += 1
        try:
            doc = with_thinking_mode(doc, config.non_thinking_ratio, config.seed)
            encoded = encode_sample(tokenizer, doc, config.split_turns)
        except (SFTError, ValueError) as e:
            stats.dropped_invalid += 1
            if len(stats.invalid_examples) < 5:
                stats.invalid_examples.append(str(e))
            continue
        if doc.meta["enable_thinking"]:
            stats.thinking += 1
        else:
            stats.non_thinking += 1
        for t in encoded:
            if len(t.ids) > config.seq_len:
                stats.dropped_overlong += 1
                continue
            trained = int(t.mask.sum())
            if trained == 0:
                stats.dropped_untrained += 1
                continue
            stats.encoded += 1
            stats.tokens += len(t.ids)
            stats.trained_tokens += trained
            yield t


def build_sft_dataset(docs: Iterable[Document], tokenizer, out_dir: str | os.PathLike,
                      config: SFTDataConfig | None = None) -> dict[str, Any]:
    """Encode, pack (best fit) and write shards to `out_dir`; returns the shard index, whose
    "sft" entry holds the sample counts."""
    config = config or SFTDataConfig()
    stats = DataStats()
    packer = Packer("best_fit", config.seq_len, pad_id=tokenizer.pad_token_id, window_tokens=config.window_tokens)
    writer = ShardWriter(out_dir, mode="best_fit", seq_len=config.seq_len, vocab_size=tokenizer.vocab_size,
                         pad_id=tokenizer.pad_token_id, rows_per_shard=config.rows_per_shard)
    for row in packer.pack(encode_samples(docs, tokenizer, config, stats)):
        writer.add(row)
    if stats.encoded == 0:
        raise SFTError(f"no trainable samples: {stats.as_dict()}")
    writer.meta = {"sft": stats.as_dict(), "sft_config": asdict(config)}
    return writer.close(packer.stats.as_dict())
