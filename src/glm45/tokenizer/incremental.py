"""Streaming detokenisation for byte-level BPE: feed ids, get the newly completed text.

Each byte-level token stands for raw bytes, so a UTF-8 character can be spread over several
tokens; decoding token by token would print replacement characters. This decoder keeps the
bytes in an incremental UTF-8 decoder and only returns complete characters, in O(1) per token.

It reproduces `tokenizers`' decode exactly (tests check it): normal tokens are joined as bytes
and decoded leniently (invalid bytes become U+FFFD); an added token (special or not) ends the
byte run before it, so bytes cut by it decode on their own, and is then written out itself;
skipped special tokens are dropped without ending the run.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from glm45.tokenizer.glm import GLMTokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-level alphabet: each byte maps to one printable character.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100 onwards, in
    byte order. This is the fixed convention every byte-level BPE vocabulary is written in.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_OF_CHAR: dict[str, int] = {c: b for b, c in _bytes_to_unicode().items()}


def token_bytes(token: str) -> bytes:
    """The bytes a byte-level token string stands for (as the ByteLevel decoder reads it).

    A token with a character outside the byte alphabet (an added token such as "中") stands
    for its own UTF-8 encoding.
    """
    try:
        return bytes(BYTE_OF_CHAR[c] for c in token)
    except KeyError:
        return token.encode("utf-8")


class IncrementalDecoder:
    """`feed(ids) -> str` returns text completed by these ids; `finish()` flushes the rest.

    The concatenation of everything returned equals `tokenizer.decode(all_ids,
    skip_special_tokens)`; no returned piece ends inside a UTF-8 character.
    """

    def __init__(self, tokenizer: GLMTokenizer, skip_special_tokens: bool = False) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._cache: dict[int, bytes] = {}

    def _bytes(self, i: int) -> bytes:
        b = self._cache.get(i)
        if b is None:
            b = self._cache[i] = token_bytes(self._tok.id_to_token(i))
        return b

    def feed(self, ids: Iterable[int] | int) -> str:
        if isinstance(ids, int):
            ids = [ids]
        out = []
        for i in ids:
            added = self._tok.added_tokens.get(i)
            if added is None:
                out.append(self._utf8.decode(self._bytes(i)))
                continue
            text, special = added
            if special and self._skip:
                continue
            out.append(self._utf8.decode(b"", final=True))  # bytes cut by an added token decode alone
            self._utf8.reset()
            out.append(token_bytes(text).decode("utf-8", errors="replace"))
        return "".join(out)

    def finish(self) -> str:
        """Text of trailing incomplete bytes (as U+FFFD); the decoder can then be reused."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text
