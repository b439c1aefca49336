"""Train a byte-level BPE tokenizer with the GLM-4.5 special tokens.

The special tokens of `special.py` take ids 0..23 in their listed order, so every trained
vocabulary shares the same special ids whatever its size. They are added tokens: the
tokenizer matches their literal strings anywhere in the text (as the released GLM-4.5
tokenizer does) and never splits them, which is what lets a rendered chat string be
tokenised in one call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from glm45.tokenizer.glm import GLMTokenizer, TokenizerError
from glm45.tokenizer.special import SPECIAL_TOKENS

# The pre-tokenisation split used by cl100k-style tokenizers and by GLM-4's ("glm4" in
# llama.cpp): contractions, letter runs with one leading non-letter, digit groups of at most
# three, punctuation runs, newlines, and whitespace that never eats the space before a word.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

BYTE_ALPHABET_SIZE = 256
MIN_VOCAB_SIZE = BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)


def _empty_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # `add_special_tokens=True` prefixes [gMASK]<sop>, as GLM tokenizers do; chat prompts are
    # encoded without it because the template already starts with those two tokens.
    tok.post_processor = processors.TemplateProcessing(
        single="[gMASK]:0 <sop>:0 $A:0",
        pair="[gMASK]:0 <sop>:0 $A:0 $B:1",
        special_tokens=[("[gMASK]", SPECIAL_TOKENS.index("[gMASK]")), ("<sop>", SPECIAL_TOKENS.index("<sop>"))],
    )
    return tok


def _checked(texts: Iterable[str]) -> Iterator[str]:
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            raise TokenizerError(f"training text {n} is a {type(text).__name__}, not a str")
        if text:
            yield text


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> GLMTokenizer:
    """Train a byte-level BPE of at most `vocab_size` entries (special tokens included).

    The vocabulary can come out smaller when the texts do not support that many merges.
    """
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise TokenizerError(
            f"vocab_size must be an int >= {MIN_VOCAB_SIZE} (256 bytes + {len(SPECIAL_TOKENS)} special tokens), "
            f"got {vocab_size!r}"
        )
    tok = _empty_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_checked(texts), trainer=trainer)
    got = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if got != list(range(len(SPECIAL_TOKENS))):  # a tokenizers release changing this would break every checkpoint
        raise TokenizerError(f"special tokens did not land at ids 0..{len(SPECIAL_TOKENS) - 1}: {got}")
    return GLMTokenizer(tok)
