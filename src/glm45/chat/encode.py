"""Training encoding of a conversation: token ids and a mask of what the assistant produced.

The ids are those of tokenising the whole rendered string at once, so training sees exactly
the tokens inference sees (no drift from tokenising message by message). The mask is 1 on:

- every token of an assistant turn after its <|assistant|> token: the think block, content
  and tool calls. Earlier turns, whose reasoning the template drops, are trained with their
  empty think block, as they appear in prompts. With thinking off, the empty think block is
  part of the prompt (the generation prompt writes it), so it is not trained.
- the token that ends an assistant turn when the next turn begins with one the model emits to
  stop: <|user|> (answer done) or <|observation|> (waiting for tool results). Training it is
  how the model learns to stop.
- a stop token appended after a final assistant turn (nothing follows it in the rendered text):
  <|observation|> when the turn ends with tool calls, as it would be followed in a longer
  conversation, else <|endoftext|>. This is the one place the ids go beyond the rendered string.

Messages go through `normalize_messages` first, so OpenAI-shaped data (null content beside tool
calls, JSON-string arguments) encodes cleanly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from glm45.chat.messages import normalize_messages
from glm45.chat.template import render_pieces

if TYPE_CHECKING:
    from glm45.tokenizer import GLMTokenizer


def encode_chat(tokenizer: GLMTokenizer, messages: Sequence[Mapping], tools: Sequence[Mapping] | None = None,
                enable_thinking: bool = True) -> tuple[list[int], list[int]]:
    """(ids, mask) of a conversation; see the module docstring for what the mask covers."""
    messages = normalize_messages(messages)
    pieces = render_pieces(messages, tools, enable_thinking=enable_thinking)
    text = "".join(p.text for p in pieces)
    trained = bytearray(len(text) + 1)
    pos = 0
    for p in pieces:
        if p.trained:
            trained[pos:pos + len(p.text)] = b"\x01" * len(p.text)
        pos += len(p.text)
    ids, offsets = tokenizer.encode_with_offsets(text)
    # Trained and untrained pieces always meet at a special token, so no token straddles two.
    mask = [trained[start] for start, _ in offsets]
    if messages and messages[-1]["role"] == "assistant":
        stop = "<|observation|>" if messages[-1].get("tool_calls") else "<|endoftext|>"
        ids.append(tokenizer.special_ids[stop])
        mask.append(1)
    return ids, mask
