"""GLMTokenizer: a byte-level BPE with the GLM-4.5 special tokens, stored as tokenizer.json.

One class serves both the small tokenizers glm45 trains (special tokens at ids 0..23) and the
released GLM-4.5 files (special tokens at 151329..); special ids are looked up by string, never
assumed. `save` writes files `transformers.AutoTokenizer` loads as a PreTrainedTokenizerFast that
encodes identically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer

from glm45.chat.template import CHAT_TEMPLATE
from glm45.tokenizer.incremental import IncrementalDecoder
from glm45.tokenizer.special import EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, STOP_TOKENS

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"  # transformers >= 4.43 may store the template here instead
MODEL_MAX_LENGTH = 131072


class TokenizerError(ValueError):
    """A tokenizer file, argument or token id is not usable."""


class GLMTokenizer:
    """Encode/decode text; knows the GLM special tokens and the chat template."""

    def __init__(self, backend: Tokenizer, chat_template: str | None = None,
                 model_max_length: int = MODEL_MAX_LENGTH) -> None:
        missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
        if missing:
            raise TokenizerError(f"tokenizer lacks the GLM-4.5 special tokens {missing}")
        self.backend = backend
        self.chat_template = chat_template if chat_template is not None else CHAT_TEMPLATE
        self.model_max_length = model_max_length
        self.special_ids: dict[str, int] = {t: backend.token_to_id(t) for t in SPECIAL_TOKENS}
        # Every added token (special or not), as decode treats them: id -> (text, special).
        self.added_tokens: dict[int, tuple[str, bool]] = {
            i: (tok.content, tok.special) for i, tok in backend.get_added_tokens_decoder().items()
        }

    # ---- encoding -------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; special-token strings in it become their single ids.

        `add_special_tokens=True` prefixes [gMASK]<sop> for tokenizers whose post-processor does
        (all glm45-trained ones); chat prompts already contain them, so the default is False.
        """
        return self.backend.encode(_check_text(text), add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        """`encode` for many texts at once (parallel inside `tokenizers`)."""
        texts = [_check_text(t) for t in texts]
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids (no added prefix) and each token's (start, end) character span in `text`."""
        enc = self.backend.encode(_check_text(text), add_special_tokens=False)
        return enc.ids, list(enc.offsets)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        ids = self._check_ids(ids)
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def incremental_decoder(self, skip_special_tokens: bool = False) -> IncrementalDecoder:
        return IncrementalDecoder(self, skip_special_tokens=skip_special_tokens)

    # ---- vocabulary -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int:
        i = self.backend.token_to_id(token)
        if i is None:
            raise TokenizerError(f"token {token!r} is not in the vocabulary")
        return i

    def id_to_token(self, i: int) -> str:
        tok = self.backend.id_to_token(int(i)) if isinstance(i, int) and i >= 0 else None
        if tok is None:
            raise TokenizerError(f"token id {i!r} is outside the vocabulary (size {self.vocab_size})")
        return tok

    @property
    def stop_token_ids(self) -> list[int]:
        """Generation ends on any of these: end of text, the user's turn, a tool observation."""
        return [self.special_ids[t] for t in STOP_TOKENS]

    @property
    def eos_token_id(self) -> int:
        return self.special_ids[EOS_TOKEN]

    @property
    def pad_token_id(self) -> int:
        return self.special_ids[PAD_TOKEN]

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        ids = [int(i) for i in ids]
        n = self.vocab_size
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise TokenizerError(f"token ids {bad[:5]} are outside the vocabulary (size {n})")
        return ids

    # ---- files ----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json and tokenizer_config.json (with the chat template) to `directory`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / TOKENIZER_FILE, self.backend.to_str())
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "added_tokens_decoder": {
                str(i): {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": special}
                for i, (text, special) in sorted(self.added_tokens.items())
            },
            "eos_token": EOS_TOKEN,
            "pad_token": PAD_TOKEN,
            "clean_up_tokenization_spaces": False,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": self.model_max_length,
            "chat_template": self.chat_template,
        }
        _atomic_write(out / CONFIG_FILE, json.dumps(config, ensure_ascii=False, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> GLMTokenizer:
        """Load tokenizer.json (+ tokenizer_config.json / chat_template.jinja when present)."""
        d = Path(directory)
        path = d / TOKENIZER_FILE
        if not path.is_file():
            raise TokenizerError(f"no {TOKENIZER_FILE} in {d}")
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise TokenizerError(f"cannot read {path}: {e}") from e
        config: dict = {}
        if (d / CONFIG_FILE).is_file():
            try:
                config = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise TokenizerError(f"cannot read {d / CONFIG_FILE}: {e}") from e
        template = config.get("chat_template")
        if (d / TEMPLATE_FILE).is_file():
            template = (d / TEMPLATE_FILE).read_text(encoding="utf-8")
        if not isinstance(template, str):  # absent, or a list of named templates
            template = None
        max_len = config.get("model_max_length")
        max_len = max_len if isinstance(max_len, int) and 0 < max_len < 1 << 40 else MODEL_MAX_LENGTH
        return cls(backend, chat_template=template, model_max_length=max_len)


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise TokenizerError(f"expected text as str, got {type(text).__name__}")
    return text


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

