"""Python function-writing tasks with hidden tests.

About fifty template families ("add 7 to each element", "count vowels", "fizzbuzz with 3 and
5", "is n prime", ...), most with parameters, at three difficulty levels: 1 one-line maps and
filters, 2 loops with state, 3 small algorithms. Each task has a prompt with one worked
example, a reference solution (source), and hidden tests (``assert`` lines) whose expected
values come from running the reference on random inputs.

Splits follow ``glm45.tasks.common`` with the prompt as the key. The prompt (its example
included) depends only on the family and its parameters, never on the seed, so a train and
a test task never share a prompt; the hidden tests differ between instances.

``run_python_tests`` is the whole execution story here: one subprocess with a timeout, a
scrubbed environment and a temporary working directory. It is not a security sandbox; swap
it for ``glm45.sandbox`` where untrusted code runs at scale.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import random
import re
import secrets
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from string import Template
from typing import Any

from glm45.tasks.common import TaskError, sample, task_id

N_TESTS = 6


def run_python_tests(solution_src: str, tests_src: str, timeout: float = 10.0) -> bool:
    """Run ``solution_src`` then ``tests_src`` in a fresh interpreter; True iff every line
    ran. A random marker printed after the tests must come back, so a solution that exits
    early (``sys.exit(0)``) does not pass."""
    marker = f"ALL-TESTS-PASSED-{secrets.token_hex(8)}"
    program = f"{solution_src}\n\n{tests_src}\n\nprint({marker!r})\n"
    env = {"PATH": os.defpath, "PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8"}
    with tempfile.TemporaryDirectory(prefix="glm45-code-") as tmp:
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", program], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return False
    return proc.returncode == 0 and marker in proc.stdout


@dataclass
class CodeTask:
    id: str
    family: str
    difficulty: int
    entry_point: str  # the function to write
    prompt: str
    reference: str  # a correct solution (source)
    tests: str  # hidden tests: one assert per line
    plan: str  # a one-line approach, the reasoning of the reference answer
    split: str = "train"

    def check(self, solution_src: str, timeout: float = 10.0) -> bool:
        """Whether ``solution_src`` (source defining ``entry_point``) passes the hidden tests."""
        return run_python_tests(solution_src, self.tests, timeout)

    def check_response(self, response_text: str, timeout: float = 10.0) -> bool:
        """``check`` on the code extracted from a model response (see ``extract_code``)."""
        return self.check(extract_code(response_text), timeout)

    def to_messages(self, thinking: bool = True) -> list[dict]:
        assistant: dict = {"role": "assistant"}
        if thinking:
            assistant["reasoning_content"] = self.plan
        assistant["content"] = f"```python\n{self.reference}```"
        return [{"role": "user", "content": self.prompt}, assistant]

    def to_document(self) -> str:
        """Plain text for pre-training: the prompt as a comment, then the solution."""
        comment = "\n".join(f"# {line}" if line else "#" for line in self.prompt.splitlines())
        return f"{comment}\n{self.reference}"


_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(response_text: str) -> str:
    """The last fenced code block after any ``</think>``; the text itself if there is none."""
    text = response_text.rsplit("</think>", 1)[-1]
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


# --- test inputs: each generator returns the argument tuple of one call ----------------------

_WORDS = ("apple", "river", "stone", "cloud", "tiger", "lemon", "green", "music", "ocean", "pilot",
          "table", "sugar", "night", "eagle", "house", "light", "bread", "smile", "train", "water")
_Inputs = Callable[[random.Random, dict, int], tuple]  # (rng, params, test index)


def _ints(rng: random.Random, lo: int = -20, hi: int = 50, max_len: int = 8, min_len: int = 0) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(min_len, max_len))]


def _sentence(rng: random.Random, min_words: int = 1, max_words: int = 6) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(min_words, max_words)))


def _LIST(rng: random.Random, p: dict, i: int) -> tuple:
    return (_ints(rng),)


def _SMALL_LIST(rng: random.Random, p: dict, i: int) -> tuple:
    return (_ints(rng, -5, 9, max_len=6),)


def _NONEMPTY(rng: random.Random, p: dict, i: int) -> tuple:
    return (_ints(rng, min_len=1),)


def _SENT(rng: random.Random, p: dict, i: int) -> tuple:
    return (_sentence(rng),)


def _SENT_OR_EMPTY(rng: random.Random, p: dict, i: int) -> tuple:
    return (_sentence(rng, min_words=0),)


def _MIXED(rng: random.Random, p: dict, i: int) -> tuple:
    return ("".join(c.upper() if rng.random() < 0.3 else c for c in _sentence(rng)),)


def _int_in(lo: int, hi: int) -> _Inputs:
    return lambda rng, p, i: (rng.randint(lo, hi),)


def _natural(max_digits: int) -> _Inputs:
    return lambda rng, p, i: (rng.randint(0, 10 ** rng.randint(1, max_digits)),)


def _below_power_of_two(rng: random.Random, p: dict, i: int) -> tuple:
    return (rng.randint(0, 2 ** rng.randint(1, 12)),)


def _short_word(rng: random.Random, p: dict, i: int) -> tuple:
    return (rng.choice(_WORDS)[: rng.randint(0, 4)],)


def _doubled_word(rng: random.Random, p: dict, i: int) -> tuple:
    return (rng.choice(_WORDS)[: rng.randint(0, 5)] * rng.randint(1, 2),)


def _ragged_sentence(rng: random.Random, p: dict, i: int) -> tuple:  # words of different lengths
    return (" ".join(rng.choice(_WORDS)[: rng.randint(1, 5)] for _ in range(rng.randint(1, 6))),)


def _repetitive_list(rng: random.Random, p: dict, i: int) -> tuple:
    return (_ints(rng, 0, 6, max_len=10),)


def _nested(rng: random.Random, p: dict, i: int) -> tuple:
    return ([_ints(rng, max_len=3) for _ in range(rng.randint(0, 4))],)


# Generators for functions with branches use the test index so that the hidden tests cover
# every branch (even i: the special case, odd i: the other one).


def _with_k(rng: random.Random, p: dict, i: int) -> tuple:
    xs = [x for x in _ints(rng, -5, 15) if x != p["k"]]
    if i % 2 == 0:
        xs.insert(rng.randint(0, len(xs)), p["k"])
    return (xs,)


def _multiples(rng: random.Random, p: dict, i: int) -> tuple:
    if i % 2 == 0:
        return (p["k"] * rng.randint(-5, 20),)
    return (rng.choice([x for x in range(-50, 201) if x % p["k"]]),)


def _fizz_input(rng: random.Random, p: dict, i: int) -> tuple:
    """Cycles through: divisible by both, only by a, only by b, by neither."""
    a, b = p["a"], p["b"]
    want = [(True, True), (True, False), (False, True), (False, False)][i % 4]
    return (rng.choice([n for n in range(1, 151) if (n % a == 0, n % b == 0) == want]),)


_PRIMES = [n for n in range(2, 301) if all(n % d for d in range(2, n))]
_NON_PRIMES = [n for n in range(-3, 301) if n not in _PRIMES]


def _prime_or_not(rng: random.Random, p: dict, i: int) -> tuple:
    return (rng.choice(_PRIMES if i % 2 == 0 else _NON_PRIMES),)


def _palindrome_or_not(rng: random.Random, p: dict, i: int) -> tuple:
    half = "".join(rng.choice("abcde") for _ in range(rng.randint(0, 4)))
    if i % 2 == 0:
        s = half + rng.choice(("", "x")) + half[::-1]
        return (s.upper() if rng.random() < 0.3 else s,)
    return (half + "".join(rng.choice("abcde") for _ in range(rng.randint(1, 3))),)


def _runs(rng: random.Random, p: dict, i: int) -> tuple:
    return ("".join(rng.choice("abc") * rng.randint(1, 4) for _ in range(rng.randint(0, 4))),)


def _parens(rng: random.Random, p: dict, i: int) -> tuple:
    if i % 2 == 0:  # balanced by construction
        s, depth = "", 0
        for _ in range(rng.randint(0, 8)):
            if depth and rng.random() < 0.5:
                s, depth = s + ")", depth - 1
            else:
                s, depth = s + "(", depth + 1
        return (s + ")" * depth,)
    return ("".join(rng.choice("()x") for _ in range(rng.randint(1, 8))),)


def _two_distinct(rng: random.Random, p: dict, i: int) -> tuple:
    while True:
        xs = _ints(rng, min_len=2)
        if len(set(xs)) >= 2:
            return (xs,)


def _pair(rng: random.Random, p: dict, i: int) -> tuple:
    n = rng.randint(0, 6)
    return [rng.randint(-9, 9) for _ in range(n)], [rng.randint(-9, 9) for _ in range(n)]


def _two_sorted(rng: random.Random, p: dict, i: int) -> tuple:
    return sorted(_ints(rng)), sorted(_ints(rng))


def _sorted_search(rng: random.Random, p: dict, i: int) -> tuple:
    xs = sorted(rng.sample(range(-30, 60), rng.randint(1, 10)))
    return xs, (rng.choice(xs) if i % 2 == 0 else rng.choice([x for x in range(-30, 61) if x not in xs]))


def _gcd_pair(rng: random.Random, p: dict, i: int) -> tuple:
    g = rng.randint(1, 12)  # a shared factor, so answers are not almost always 1
    return g * rng.randint(1, 30), g * rng.randint(1, 30)


# --- families ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Family:
    name: str  # also the entry point
    difficulty: int
    sig: str  # e.g. "add_k(xs)"
    desc: str  # completes "Write a Python function `sig` that ..."; str.format with the params
    source: str  # reference solution, indented as in the table; string.Template with the params ($k)
    inputs: _Inputs  # the arguments of one test call
    plan: str  # str.format with the params
    params: Callable[[random.Random], dict] = field(default=lambda rng: {})


def _k(lo: int, hi: int) -> Callable[[random.Random], dict]:
    return lambda rng: {"k": rng.randint(lo, hi)}


def _c(letters: str) -> Callable[[random.Random], dict]:
    return lambda rng: {"c": rng.choice(letters)}


def _clamp_params(rng: random.Random) -> dict:
    lo = rng.randint(-10, 20)
    return {"lo": lo, "hi": lo + rng.randint(5, 40)}


def _fizz_params(rng: random.Random) -> dict:
    # coprime, so that "only by a" and "only by b" both exist
    a, b = rng.choice([(a, b) for a in range(2, 8) for b in range(2, 8) if a != b and math.gcd(a, b) == 1])
    w1, w2 = rng.choice((("Fizz", "Buzz"), ("Foo", "Bar"), ("Ping", "Pong")))
    return {"a": a, "b": b, "w1": w1, "w2": w2}


def _ab_params(rng: random.Random) -> dict:
    a, b = rng.sample(range(2, 10), 2)
    return {"a": a, "b": b}


FAMILIES: list[_Family] = [
    # --- difficulty 1: one expression ---
    _Family("add_k", 1, "add_k(xs)", "returns a new list with {k} added to each element of the list xs", """
        def add_k(xs):
            return [x + $k for x in xs]
        """, _LIST, "Add {k} to every element with a list comprehension.", _k(2, 20)),
    _Family("scale", 1, "scale(xs)", "returns a new list with each element of xs multiplied by {k}", """
        def scale(xs):
            return [x * $k for x in xs]
        """, _LIST, "Multiply every element by {k} in a list comprehension.", _k(2, 9)),
    _Family("keep_above", 1, "keep_above(xs)",
            "returns the elements of xs that are greater than {k}, in their original order", """
        def keep_above(xs):
            return [x for x in xs if x > $k]
        """, _LIST, "Filter with a comprehension keeping x > {k}.", _k(0, 30)),
    _Family("count_above", 1, "count_above(xs)", "returns how many elements of xs are greater than {k}", """
        def count_above(xs):
            return sum(1 for x in xs if x > $k)
        """, _LIST, "Count the elements with x > {k}.", _k(0, 30)),
    _Family("sum_squares", 1, "sum_squares(xs)", "returns the sum of the squares of the numbers in xs", """
        def sum_squares(xs):
            return sum(x * x for x in xs)
        """, _LIST, "Sum x * x over the list."),
    _Family("count_vowels", 1, "count_vowels(s)",
            "returns the number of vowels (a, e, i, o, u, in either case) in the string s", """
        def count_vowels(s):
            return sum(1 for ch in s.lower() if ch in 'aeiou')
        """, _MIXED, "Lower-case s and count characters in 'aeiou'."),
    _Family("reverse_words", 1, "reverse_words(s)",
            "returns the words of the sentence s in reverse order, joined by single spaces", """
        def reverse_words(s):
            return ' '.join(s.split()[::-1])
        """, _SENT, "Split into words, reverse the list, join with spaces."),
    _Family("clamp", 1, "clamp(x)", "returns x limited to the range {lo} to {hi} inclusive", """
        def clamp(x):
            return max($lo, min($hi, x))
        """, _int_in(-50, 100), "Take max({lo}, min({hi}, x)).", _clamp_params),
    _Family("is_multiple", 1, "is_multiple(x)",
            "returns True if the integer x is divisible by {k} and False otherwise", """
        def is_multiple(x):
            return x % $k == 0
        """, _multiples, "Check x % {k} == 0.", _k(2, 12)),
    _Family("repeat_text", 1, "repeat_text(s)", "returns the string s repeated {k} times", """
        def repeat_text(s):
            return s * $k
        """, _short_word, "Multiply the string by {k}.", _k(2, 5)),
    _Family("count_letter", 1, "count_letter(s)", "returns how many times the letter '{c}' appears in the string s", """
        def count_letter(s):
            return s.count('$c')
        """, _SENT, "Use s.count('{c}').", _c("aeilnorst")),
    _Family("remove_letter", 1, "remove_letter(s)", "returns the string s with every '{c}' removed", """
        def remove_letter(s):
            return s.replace('$c', '')
        """, _SENT, "Replace '{c}' with the empty string.", _c("aeilnorst")),
    _Family("abs_all", 1, "abs_all(xs)", "returns a new list with the absolute value of each element of xs", """
        def abs_all(xs):
            return [abs(x) for x in xs]
        """, _LIST, "Apply abs to every element."),
    _Family("word_lengths", 1, "word_lengths(s)", "returns a list with the length of each word in the sentence s", """
        def word_lengths(s):
            return [len(w) for w in s.split()]
        """, _SENT, "Split into words and take len of each."),
    _Family("last_k", 1, "last_k(xs)", "returns the last {k} elements of the list xs (all of xs if it is shorter)", """
        def last_k(xs):
            return xs[-$k:]
        """, _LIST, "Slice xs[-{k}:].", _k(1, 6)),
    _Family("first_k", 1, "first_k(xs)",
            "returns the first {k} elements of the list xs (all of xs if it is shorter)", """
        def first_k(xs):
            return xs[:$k]
        """, _LIST, "Slice xs[:{k}].", _k(1, 6)),
    _Family("product", 1, "product(xs)", "returns the product of the numbers in xs (1 for an empty list)", """
        def product(xs):
            result = 1
            for x in xs:
                result *= x
            return result
        """, _SMALL_LIST, "Start from 1 and multiply by each element."),
    _Family("count_evens", 1, "count_evens(xs)", "returns how many elements of xs are even", """
        def count_evens(xs):
            return sum(1 for x in xs if x % 2 == 0)
        """, _LIST, "Count elements with x % 2 == 0."),
    _Family("square_evens", 1, "square_evens(xs)", "returns the squares of the even elements of xs, in order", """
        def square_evens(xs):
            return [x * x for x in xs if x % 2 == 0]
        """, _LIST, "Comprehension over even x, yielding x * x."),
    _Family("starting_with", 1, "starting_with(s)",
            "returns the list of words in the sentence s that start with the letter '{c}'", """
        def starting_with(s):
            return [w for w in s.split() if w.startswith('$c')]
        """, _SENT, "Split into words and keep those starting with '{c}'.", _c("aegilmnorstw")),
    _Family("title_case", 1, "title_case(s)",
            "returns the sentence s with the first letter of every word capitalised, words joined by single spaces", """
        def title_case(s):
            return ' '.join(w.capitalize() for w in s.split())
        """, _SENT, "Capitalize each word and join with spaces."),
    _Family("replace_spaces", 1, "replace_spaces(s)", "returns the string s with every space replaced by '{c}'", """
        def replace_spaces(s):
            return s.replace(' ', '$c')
        """, _SENT, "Replace ' ' with '{c}'.", _c("-_*+.")),
    _Family("count_words", 1, "count_words(s)",
            "returns the number of words in the string s (words are separated by whitespace)", """
        def count_words(s):
            return len(s.split())
        """, _SENT_OR_EMPTY, "Split on whitespace and take the length."),
    _Family("spread", 1, "spread(xs)", "returns the largest element of xs minus the smallest (0 for an empty list)", """
        def spread(xs):
            return max(xs) - min(xs) if xs else 0
        """, _LIST, "Return max - min, or 0 when empty."),
    _Family("index_of", 1, "index_of(xs)",
            "returns the index of the first occurrence of {k} in the list xs, or -1 if it does not appear", """
        def index_of(xs):
            return xs.index($k) if $k in xs else -1
        """, _with_k, "Use xs.index({k}) when {k} is present, else -1.", _k(0, 9)),
    # --- difficulty 2: a loop with state ---
    _Family("running_sum", 2, "running_sum(xs)", "returns the running sums of xs: element i is xs[0] + ... + xs[i]", """
        def running_sum(xs):
            out, total = [], 0
            for x in xs:
                total += x
                out.append(total)
            return out
        """, _LIST, "Keep a total and append it after adding each element."),
    _Family("fizzbuzz", 2, "fizzbuzz(n)",
            "returns '{w1}{w2}' if n is divisible by both {a} and {b}, '{w1}' if only by {a}, "
            "'{w2}' if only by {b}, and str(n) otherwise", """
        def fizzbuzz(n):
            if n % $a == 0 and n % $b == 0:
                return '$w1$w2'
            if n % $a == 0:
                return '$w1'
            if n % $b == 0:
                return '$w2'
            return str(n)
        """, _fizz_input, "Check divisibility by both {a} and {b} first, then each alone.", _fizz_params),
    _Family("digit_sum", 2, "digit_sum(n)", "returns the sum of the decimal digits of the non-negative integer n", """
        def digit_sum(n):
            return sum(int(d) for d in str(n))
        """, _natural(7), "Sum the digits of str(n)."),
    _Family("reverse_digits", 2, "reverse_digits(n)",
            "returns the integer whose digits are those of the non-negative integer n in reverse order "
            "(120 gives 21)", """
        def reverse_digits(n):
            return int(str(n)[::-1])
        """, _natural(6), "Reverse str(n) and convert back with int."),
    _Family("is_palindrome", 2, "is_palindrome(s)",
            "returns True if the string s reads the same forwards and backwards ignoring case, and False otherwise", """
        def is_palindrome(s):
            t = s.lower()
            return t == t[::-1]
        """, _palindrome_or_not, "Lower-case s and compare it with its reverse."),
    _Family("dedupe", 2, "dedupe(xs)",
            "returns the elements of xs without duplicates, keeping the first occurrence of each in order", """
        def dedupe(xs):
            seen, out = set(), []
            for x in xs:
                if x not in seen:
                    seen.add(x)
                    out.append(x)
            return out
        """, _repetitive_list, "Track seen values and append unseen ones."),
    _Family("diffs", 2, "diffs(xs)",
            "returns the differences between consecutive elements of xs: [xs[1] - xs[0], xs[2] - xs[1], ...]", """
        def diffs(xs):
            return [b - a for a, b in zip(xs, xs[1:])]
        """, _LIST, "Zip xs with xs[1:] and subtract."),
    _Family("rotate_left", 2, "rotate_left(xs)",
            "returns the list xs rotated left by {k} positions (elements leaving the front go to the back)", """
        def rotate_left(xs):
            if not xs:
                return []
            k = $k % len(xs)
            return xs[k:] + xs[:k]
        """, _LIST, "Reduce {k} modulo the length, then join the two slices.", _k(1, 9)),
    _Family("chunks", 2, "chunks(xs)",
            "splits the list xs into consecutive chunks of {k} elements (the last may be shorter) "
            "and returns the list of chunks", """
        def chunks(xs):
            return [xs[i:i + $k] for i in range(0, len(xs), $k)]
        """, _LIST, "Slice xs[i:i + {k}] for i stepping by {k}.", _k(2, 4)),
    _Family("flatten", 2, "flatten(xss)", "returns one list containing the elements of the lists in xss, in order", """
        def flatten(xss):
            return [x for xs in xss for x in xs]
        """, _nested, "Nested comprehension over the lists."),
    _Family("add_pairs", 2, "add_pairs(xs, ys)",
            "returns the list of xs[i] + ys[i] for two lists xs and ys of equal length", """
        def add_pairs(xs, ys):
            return [x + y for x, y in zip(xs, ys)]
        """, _pair, "Zip the lists and add pairs."),
    _Family("dot", 2, "dot(xs, ys)", "returns the dot product of two lists of numbers xs and ys of equal length", """
        def dot(xs, ys):
            return sum(x * y for x, y in zip(xs, ys))
        """, _pair, "Sum the products of zipped pairs."),
    _Family("second_largest", 2, "second_largest(xs)",
            "returns the second largest distinct value in the list xs (xs has at least two distinct values)", """
        def second_largest(xs):
            return sorted(set(xs))[-2]
        """, _two_distinct, "Sort the distinct values and take the second from the end."),
    _Family("longest_word", 2, "longest_word(s)",
            "returns the longest word in the sentence s (the first one if several are equally long)", """
        def longest_word(s):
            best = ''
            for w in s.split():
                if len(w) > len(best):
                    best = w
            return best
        """, _ragged_sentence, "Keep the longest word seen, replacing only when strictly longer."),
    _Family("caesar", 2, "caesar(s)",
            "shifts each lowercase letter of s forward by {k} places in the alphabet (z wraps to a) "
            "and leaves other characters unchanged", """
        def caesar(s):
            out = ''
            for ch in s:
                if 'a' <= ch <= 'z':
                    ch = chr((ord(ch) - ord('a') + $k) % 26 + ord('a'))
                out += ch
            return out
        """, _SENT, "Shift lowercase letters with ord/chr modulo 26.", _k(1, 25)),
    _Family("to_binary", 2, "to_binary(n)",
            "returns the binary representation of the non-negative integer n as a string without a prefix "
            "('0' for 0)", """
        def to_binary(n):
            return bin(n)[2:]
        """, _below_power_of_two, "Strip the '0b' from bin(n)."),
    _Family("sum_multiples", 2, "sum_multiples(n)",
            "returns the sum of all positive integers below n that are divisible by {a} or {b}", """
        def sum_multiples(n):
            return sum(i for i in range(1, n) if i % $a == 0 or i % $b == 0)
        """, _int_in(0, 100), "Sum i in range(1, n) when i % {a} == 0 or i % {b} == 0.", _ab_params),
    _Family("char_counts", 2, "char_counts(s)",
            "returns a dict mapping each character of the string s to the number of times it appears", """
        def char_counts(s):
            counts = {}
            for ch in s:
                counts[ch] = counts.get(ch, 0) + 1
            return counts
        """, _doubled_word, "Count with a dict and get(ch, 0) + 1."),
    _Family("min_max", 2, "min_max(xs)", "returns a tuple (smallest, largest) for the non-empty list xs", """
        def min_max(xs):
            return (min(xs), max(xs))
        """, _NONEMPTY, "Return (min(xs), max(xs))."),
    _Family("mean_floor", 2, "mean_floor(xs)",
            "returns the sum of the non-empty list xs divided by its length, rounded down", """
        def mean_floor(xs):
            return sum(xs) // len(xs)
        """, _NONEMPTY, "Integer-divide the sum by the length."),
    # --- difficulty 3: a small algorithm ---
    _Family("fib", 3, "fib(n)", "returns the n-th Fibonacci number, where fib(0) = 0 and fib(1) = 1", """
        def fib(n):
            a, b = 0, 1
            for _ in range(n):
                a, b = b, a + b
            return a
        """, _int_in(0, 40), "Iterate a, b = b, a + b n times."),
    _Family("factorial", 3, "factorial(n)", "returns n! for a non-negative integer n (0! is 1)", """
        def factorial(n):
            result = 1
            for i in range(2, n + 1):
                result *= i
            return result
        """, _int_in(0, 15), "Multiply 2..n into an accumulator starting at 1."),
    _Family("is_prime", 3, "is_prime(n)", "returns True if the integer n is prime and False otherwise", """
        def is_prime(n):
            if n < 2:
                return False
            i = 2
            while i * i <= n:
                if n % i == 0:
                    return False
                i += 1
            return True
        """, _prime_or_not, "Trial division up to the square root."),
    _Family("gcd", 3, "gcd(a, b)", "returns the greatest common divisor of the positive integers a and b", """
        def gcd(a, b):
            while b:
                a, b = b, a % b
            return a
        """, _gcd_pair, "Euclid's algorithm."),
    _Family("collatz_steps", 3, "collatz_steps(n)",
            "returns how many steps it takes to reach 1 from the positive integer n, where each step "
            "halves an even number and maps an odd number m to 3 * m + 1", """
        def collatz_steps(n):
            steps = 0
            while n != 1:
                n = n // 2 if n % 2 == 0 else 3 * n + 1
                steps += 1
            return steps
        """, _int_in(1, 200), "Loop until n is 1, counting steps."),
    _Family("count_primes", 3, "count_primes(n)", "returns how many prime numbers are less than n", """
        def count_primes(n):
            count = 0
            for m in range(2, n):
                if all(m % d for d in range(2, int(m ** 0.5) + 1)):
                    count += 1
            return count
        """, _int_in(0, 200), "Test each m below n by trial division and count the primes."),
    _Family("run_length", 3, "run_length(s)",
            "returns the run-length encoding of s, where each run of a repeated character becomes the "
            "character followed by the run length ('aaab' gives 'a3b1')", """
        def run_length(s):
            out, i = '', 0
            while i < len(s):
                j = i
                while j < len(s) and s[j] == s[i]:
                    j += 1
                out += s[i] + str(j - i)
                i = j
            return out
        """, _runs, "Scan runs with two indices and append character plus length."),
    _Family("merge_sorted", 3, "merge_sorted(xs, ys)", "merges two sorted lists of integers into one sorted list", """
        def merge_sorted(xs, ys):
            out, i, j = [], 0, 0
            while i < len(xs) and j < len(ys):
                if xs[i] <= ys[j]:
                    out.append(xs[i])
                    i += 1
                else:
                    out.append(ys[j])
                    j += 1
            return out + xs[i:] + ys[j:]
        """, _two_sorted, "Two pointers, always taking the smaller head, then append the rest."),
    _Family("binary_search", 3, "binary_search(xs, target)",
            "returns the index of target in the sorted list of distinct integers xs, or -1 if it is absent", """
        def binary_search(xs, target):
            lo, hi = 0, len(xs) - 1
            while lo <= hi:
                mid = (lo + hi) // 2
                if xs[mid] == target:
                    return mid
                if xs[mid] < target:
                    lo = mid + 1
                else:
                    hi = mid - 1
            return -1
        """, _sorted_search, "Halve the range [lo, hi] until target is found or the range is empty."),
    _Family("balanced", 3, "balanced(s)",
            "returns True if the parentheses '(' and ')' in the string s are balanced and False otherwise "
            "(other characters are ignored)", """
        def balanced(s):
            depth = 0
            for ch in s:
                if ch == '(':
                    depth += 1
                elif ch == ')':
                    depth -= 1
                    if depth < 0:
                        return False
            return depth == 0
        """, _parens, "Track depth; it must never go negative and must end at zero."),
]
FAMILY_NAMES = tuple(f.name for f in FAMILIES)


def _call_text(entry: str, args: tuple) -> str:
    return f"{entry}({', '.join(repr(a) for a in args)})"


def _example(fam: _Family, params: dict, fn: Callable, rng: random.Random) -> tuple[tuple, Any]:
    """An informative worked example (no empty input or output when one can be found). Its
    RNG is seeded by the description, so the prompt is fixed per family and parameters."""
    for i in range(20):
        args = fam.inputs(rng, params, i)
        result = fn(*copy.deepcopy(args))
        if not any(_empty(v) for v in (*args, result)):
            break
    return args, result


def _empty(value: Any) -> bool:
    return isinstance(value, (list, str, dict, tuple)) and len(value) == 0


@functools.lru_cache(maxsize=1024)
def _reference(family_index: int, params: tuple) -> tuple[str, Callable, str]:
    """(source, function, prompt) of one family instance, cached: generators draw the same
    instances many times, and rejection sampling for a split draws many more."""
    fam, p = FAMILIES[family_index], dict(params)
    source = Template(textwrap.dedent(fam.source).lstrip("\n")).substitute(p)
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<reference {fam.name}>", "exec"), namespace)  # our own template code
    fn = namespace[fam.name]
    desc = fam.desc.format(**p)
    example, result = _example(fam, p, fn, random.Random(f"example/{fam.name}/{desc}"))
    prompt = (f"Write a Python function `{fam.sig}` that {desc}.\n"
              f"For example, `{_call_text(fam.name, example)}` returns `{result!r}`.")
    return source, fn, prompt


def _make_task(fam: _Family, params: dict, rng: random.Random, split: str, tid: str) -> CodeTask:
    reference, fn, prompt = _reference(FAMILIES.index(fam), tuple(sorted(params.items())))
    lines: list[str] = []
    for i in range(N_TESTS):
        for _ in range(10):  # avoid repeating a test (a tiny input space may still force one)
            args = fam.inputs(rng, params, i)
            line = f"assert {_call_text(fam.name, args)} == {fn(*copy.deepcopy(args))!r}"
            if line not in lines:
                break
        lines.append(line)
    return CodeTask(id=tid, family=fam.name, difficulty=fam.difficulty, entry_point=fam.name, prompt=prompt,
                    reference=reference, tests="\n".join(lines) + "\n", plan=fam.plan.format(**params), split=split)


def generate_code_tasks(
    n: int,
    seed: int,
    *,
    split: str = "train",
    difficulty: int | Sequence[int] | None = None,
    families: Sequence[str] | None = None,
    unique: bool = False,
) -> list[CodeTask]:
    """``n`` tasks from families drawn uniformly (optionally only some ``difficulty`` levels
    1-3 or named ``families``). ``unique`` rejects a repeated prompt; the whole space holds a
    few hundred prompts, a fifth of them in the test split."""
    levels = None if difficulty is None else ({difficulty} if isinstance(difficulty, int) else set(difficulty))
    if levels is not None and not levels <= {1, 2, 3}:
        raise TaskError(f"difficulty must be 1, 2, 3 or a list of them, got {difficulty!r}")
    unknown = sorted(set(families or ()) - set(FAMILY_NAMES))
    if unknown:
        raise TaskError(f"unknown code task families {unknown}; known: {list(FAMILY_NAMES)}")
    pool = [f for f in FAMILIES
            if (levels is None or f.difficulty in levels) and (families is None or f.name in families)]
    if not pool:
        raise TaskError(f"no code task family has difficulty {difficulty!r} among {families!r}")

    def make(rng: random.Random, index: int) -> CodeTask:
        fam = rng.choice(pool)
        return _make_task(fam, fam.params(rng), rng, split, task_id("code", split, seed, index))

    return sample(n, make, lambda t: t.prompt, family="code", seed=seed, split=split, unique=unique)
