"""Fill-in-the-Middle: reversible PSM/SPM permutations at character-level split points."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from glm45.data.document import Document
from glm45.data.fim import MIDDLE, PREFIX, SUFFIX, FimTransform, fim_permute, fim_unpermute
from glm45.tokenizer import train_tokenizer
from glm45.tokenizer.special import SPECIAL_TOKENS

CODE = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), seed=st.integers(0, 2**32 - 1), spm=st.booleans())
def test_unpermute_recovers_any_document(text, seed, spm):
    out = fim_permute(text, np.random.default_rng(seed), spm=spm)
    assert fim_unpermute(out) == text


def test_psm_and_spm_layouts_on_real_code():
    rng = np.random.default_rng(0)
    psm = fim_permute(CODE, rng, spm=False)
    assert psm.startswith(PREFIX) and psm.index(SUFFIX) < psm.index(MIDDLE)
    prefix = psm[len(PREFIX):psm.index(SUFFIX)]
    suffix = psm[psm.index(SUFFIX) + len(SUFFIX):psm.index(MIDDLE)]
    middle = psm[psm.index(MIDDLE) + len(MIDDLE):]
    assert CODE == prefix + middle + suffix and CODE.startswith(prefix) and CODE.endswith(suffix)
    spm = fim_permute(CODE, rng, spm=True)
    assert spm.startswith(SUFFIX) and spm.index(PREFIX) < spm.index(MIDDLE)
    assert fim_unpermute(spm) == CODE


def test_split_points_are_character_level_and_uniform():
    rng = np.random.default_rng(1)
    starts = []
    for _ in range(2000):
        out = fim_permute("abcdefghij", rng, spm=False)
        starts.append(len(out[len(PREFIX):out.index(SUFFIX)]))
    counts = np.bincount(starts, minlength=11)
    assert counts.min() > 0  # every character boundary is used, including 0 and len
    assert counts[0] > counts[10]  # the first cut is the smaller of two uniform draws


def test_transform_rates_and_what_it_skips():
    docs = [Document(text=CODE + f"\n# {i}\n", meta={"language": "python"}) for i in range(2000)]
    fim = FimTransform(rate=0.5, spm_rate=0.25, seed=0)
    out = list(fim.apply(docs))
    n_fim = fim.counts["psm"] + fim.counts["spm"]
    assert abs(n_fim / 2000 - 0.5) < 0.04 and abs(fim.counts["spm"] / n_fim - 0.25) < 0.05
    assert sum(d.meta.get("fim") is not None for d in out) == n_fim
    assert all(fim_unpermute(o.text) == d.text for o, d in zip(out, docs))
    again = [d.text for d in FimTransform(rate=0.5, spm_rate=0.25, seed=0).apply(docs)]
    assert again == [d.text for d in out]  # deterministic under the seed

    always = FimTransform(rate=1.0, seed=0)
    prose = Document(text="Plain prose.", meta={"language": "text"})
    chat = Document(text="", messages=[{"role": "user", "content": "hi"}])
    tricky = Document(text=f"s = '{PREFIX}'\n", meta={"language": "python"})
    assert always(prose) is prose and always(chat) is chat and always(tricky) is tricky


def test_sentinels_tokenise_to_single_special_ids():
    tok = train_tokenizer([CODE], 400)
    out = fim_permute(CODE[:500], np.random.default_rng(3), spm=False)
    ids = tok.encode(out)
    for s in (PREFIX, SUFFIX, MIDDLE):
        assert ids.count(SPECIAL_TOKENS.index(s)) == 1
    assert tok.decode(ids) == out
