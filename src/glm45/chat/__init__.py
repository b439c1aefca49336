"""The GLM-4.5 chat format: render prompts, parse (and stream-parse) outputs, encode for training."""

from glm45.chat.encode import encode_chat
from glm45.chat.messages import normalize_messages
from glm45.chat.parse import StreamParser, parse
from glm45.chat.template import CHAT_TEMPLATE, ChatFormatError, render, render_pieces

__all__ = [
    "CHAT_TEMPLATE",
    "ChatFormatError",
    "StreamParser",
    "encode_chat",
    "normalize_messages",
    "parse",
    "render",
    "render_pieces",
]
