import argparse
import json
import subprocess
import sys

import pytest
import torch

from glm45.cli import positive_int
from glm45.model import GLM45ForCausalLM
from glm45.tokenizer import GLMTokenizer


def _glm45(*args, **kw):
    return subprocess.run([sys.executable, "-m", "glm45", *args], capture_output=True, text=True, **kw)


def test_help_lists_commands():
    out = _glm45("--help")
    assert out.returncode == 0 and "params" in out.stdout and "init" in out.stdout


def test_params_prints_table1_counts():
    out = _glm45("params", "glm-4.5", "--json")
    n = json.loads(out.stdout)
    assert round(n["total"] / 1e9, 2) == 355.23 and round(n["active"] / 1e9, 2) == 32.48
    bad = _glm45("params", "glm-9")
    assert bad.returncode == 2 and "unknown preset" in bad.stdout


def test_init_writes_a_loadable_checkpoint_with_tokenizer(tmp_path):
    out = _glm45("init", "--preset", "tiny", "--out", str(tmp_path / "ck"))
    assert out.returncode == 0, out.stderr
    model = GLM45ForCausalLM.from_pretrained(tmp_path / "ck")
    tok = GLMTokenizer.from_pretrained(tmp_path / "ck")
    ids = torch.tensor([tok.encode("def f(x): return x")])
    assert model(ids).logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert model.config.eos_token_id == tok.stop_token_ids


def test_counts_below_one_or_not_integers_are_named():
    assert positive_int("3") == 3
    for bad, message in (("0", "at least 1, got 0"), ("-2", "at least 1, got -2"), ("two", "not an integer")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            positive_int(bad)
