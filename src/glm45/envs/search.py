"""The search agent's world: a local "web" (BM25 over a document collection) and its environment.

Tools: `search(query)` returns the top pages (id, title, snippet); `open_page(id)` returns a
page's text. The agent answers with a turn that calls no tool ("Answer: ..."); the reward is
the accuracy of that final answer (§3.3.2: "the accuracy of the final answer as a reward for the
entire agent trace"); a trajectory cut off at `max_turns` earns 0.

Collections:
- `builtin_collection("synthetic")`: encyclopedia pages about invented entities, with the exact
  knowledge graph they were written from (`glm45.envs.kg.synthetic_world`).
- `builtin_collection("stdlib")`: the Python standard library's module documentation
  (`glm45.data.builtin.docstring_document`), with a graph read from the documents' structure.
- `load_collection(path)`: any JSONL corpus (`{"id", "title", "text"}` per line; the title may
  sit in `meta.title`, else the first line is the title), with the pattern-based extractor.
`Collection.questions(n)` synthesises multi-hop questions over the collection's graph.

`OracleSearcher` and `NoisySearcher` are scripted agents that really use the tools (search for
the current entity, open its page, read the next fact off it with the collection's extractor):
the oracle shows the environment is solvable within 2 turns per hop plus the answer; the noisy
one wastes actions at random, so its accuracy grows with the turn budget (Figure 8).
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
import string
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glm45.envs.base import EnvError, Message, Step, ToolEnvironment, Turn, register_env
from glm45.envs.kg import KnowledgeGraph, Page, Triple, docstring_triples, extract_triples, synthesize_questions, \
    synthetic_world

__all__ = ["BM25", "Collection", "NoisySearcher", "OracleSearcher", "SearchEnv", "answer_matches",
           "builtin_collection", "extract_answer", "load_collection", "SEARCH_TOOLS"]

_TOKEN = re.compile(r"[A-Za-z0-9_]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; identifiers split on underscores as well as kept whole."""
    out = []
    for tok in _TOKEN.findall(text.lower()):
        out.append(tok)
        if "_" in tok.strip("_"):
            out += [p for p in tok.split("_") if p]
    return out


class BM25:
    """Okapi BM25 over tokenised documents (k1, b as in Robertson et al.; Lucene's idf, always > 0)."""

    def __init__(self, docs: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.n = len(docs)
        self.lengths = np.array([len(d) for d in docs], dtype=np.float64)
        self.avg_len = float(self.lengths.mean()) if self.n else 0.0
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        rows: dict[str, tuple[list[int], list[int]]] = {}
        for i, doc in enumerate(docs):
            for term, tf in Counter(doc).items():
                ids, tfs = rows.setdefault(term, ([], []))
                ids.append(i)
                tfs.append(tf)
        for term, (ids, tfs) in rows.items():
            self.postings[term] = (np.array(ids, dtype=np.int64), np.array(tfs, dtype=np.float64))
        self._norm = self.k1 * (1 - self.b + self.b * self.lengths / max(self.avg_len, 1e-9))

    def df(self, term: str) -> int:
        """How many documents contain `term`."""
        return len(self.postings[term][0]) if term in self.postings else 0

    def idf(self, term: str) -> float:
        df = self.df(term)
        return math.log(1 + (self.n - df + 0.5) / (df + 0.5))

    def scores(self, query: Sequence[str]) -> np.ndarray:
        out = np.zeros(self.n)
        for term in set(query):
            if term not in self.postings:
                continue
            ids, tfs = self.postings[term]
            out[ids] += self.idf(term) * tfs * (self.k1 + 1) / (tfs + self._norm[ids])
        return out

    def top(self, query: Sequence[str], k: int) -> list[tuple[int, float]]:
        scores = self.scores(query)
        hits = np.flatnonzero(scores > 0)
        order = hits[np.lexsort((hits, -scores[hits]))][:k]  # best first, ties by document order
        return [(int(i), float(scores[i])) for i in order]


@dataclass
class Collection:
    """Pages, their BM25 index and knowledge graph, and the extractor that reads facts off a page."""

    name: str
    pages: list[Page]
    extractor: Callable[[Page], list[Triple]]
    graph: KnowledgeGraph | None = None  # the exact graph when the pages were written from one
    question_options: dict[str, Any] = field(default_factory=dict)
    env_config: dict[str, Any] = field(default_factory=dict)  # make_env("search", **env_config) rebuilds it

    def __post_init__(self) -> None:
        if not self.pages:
            raise EnvError(f"collection {self.name!r} has no pages")
        ids = [p.id for p in self.pages]
        if len(set(ids)) != len(ids):
            dup = next(i for i, c in Counter(ids).items() if c > 1)
            raise EnvError(f"collection {self.name!r}: page id {dup!r} appears more than once")
        self.by_id = {p.id: p for p in self.pages}
        self.index = BM25([tokenize(f"{p.title} {p.title} {p.text}") for p in self.pages])  # titles count twice
        if self.graph is None:
            self.graph = KnowledgeGraph(t for p in self.pages for t in self.extractor(p))

    def search(self, query: str, k: int = 5) -> list[dict[str, str]]:
        hits = self.index.top(tokenize(query), k)
        return [{"id": self.pages[i].id, "title": self.pages[i].title, "snippet": _snippet(self.pages[i].text, query)}
                for i, _ in hits]

    def questions(self, n: int, seed: int = 0, **options: Any) -> list[dict]:
        """Multi-hop questions over this collection's graph (see `glm45.envs.kg.synthesize_questions`)."""
        kwargs = {**self.question_options, **options}
        tasks = synthesize_questions(self.graph, n, seed, **kwargs)
        for t in tasks:
            t.update(collection=self.name, env="search", env_config=dict(self.env_config))
        return tasks


def _snippet(text: str, query: str, width: int = 160) -> str:
    terms = set(tokenize(query))
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
    best = max(sentences, key=lambda s: len(terms & set(tokenize(s))), default="")
    return best if len(best) <= width else best[: width - 3] + "..."


# ---- collections ----------------------------------------------------------------------------


def _pattern_extractor(page: Page) -> list[Triple]:
    return extract_triples(page.text)


def _synthetic(seed: int = 0, **sizes: int) -> Collection:
    kg, pages = synthetic_world(seed, **sizes)
    return Collection("synthetic", pages, _pattern_extractor, kg, {"hops": (1, 2, 3), "obfuscate": 0.5},
                      {"collection": "synthetic", "seed": seed, **sizes})


def _stdlib(seed: int = 0, max_modules: int = 400) -> Collection:
    from glm45.data.builtin import docstring_document, stdlib_files

    root = Path(sysconfig.get_paths()["stdlib"])
    pages = []
    for path in stdlib_files()[: max_modules * 4]:
        rel = path.relative_to(root).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        if not parts or any(p.startswith("_") for p in parts):
            continue
        module = ".".join(parts)
        try:
            doc = docstring_document(path.read_text(encoding="utf-8"), module)
        except (OSError, UnicodeDecodeError):
            continue
        if doc:
            pages.append(Page(id=module, title=module, text=doc))
        if len(pages) >= max_modules:
            break

    def extractor(page: Page) -> list[Triple]:
        return docstring_triples(page.title, page.text)

    collection = Collection("stdlib", pages, extractor,
                            question_options={"hops": (2,), "obfuscate": 0.0, "start_types": ("method",)},
                            env_config={"collection": "stdlib", "max_modules": max_modules})
    # A question may name a method only if one class has it, the name is distinctive (a method
    # called `value` or `mail` could not be found by searching for it) and its class is
    # documented on one page only (two modules both have a class `Function`).
    triples = [(p.id, t) for p in pages for t in extractor(p)]
    owners = Counter(t.subject for _, t in triples if t.relation == "method_of")
    page_classes = {(pid, t.object if t.relation == "method_of" else t.subject) for pid, t in triples}
    class_pages = Counter(cls for _, cls in page_classes)
    graph = collection.graph
    collection.question_options["unique_names"] = {
        m for m, c in owners.items() if c == 1 and ("_" in m.strip("_") or len(m) >= 8)
        and collection.index.df(m.lower()) <= 3 and class_pages[graph.out.get(m, {}).get("method_of")] == 1}
    return collection


_BUILTIN = {"synthetic": _synthetic, "stdlib": _stdlib}


def builtin_collection(name: str = "synthetic", seed: int = 0, **options: Any) -> Collection:
    """`synthetic` (options: the sizes of `synthetic_world`) or `stdlib` (option: `max_modules`).
    Built once per process and shared (a collection is read-only once built)."""
    if name not in _BUILTIN:
        raise EnvError(f"unknown built-in collection {name!r}; choose one of {sorted(_BUILTIN)}")
    return _cached_collection(name, seed, tuple(sorted(options.items())))


@functools.lru_cache(maxsize=8)
def _cached_collection(name: str, seed: int, options: tuple) -> Collection:
    try:
        return _BUILTIN[name](seed, **dict(options))
    except TypeError as e:
        raise EnvError(f"bad options for the {name!r} collection: {e}") from None


def load_collection(path: str, name: str | None = None) -> Collection:
    """A JSONL corpus (`glm45.data` document format) with the pattern-based extractor."""
    from glm45.data.document import read_documents

    pages = []
    for i, doc in enumerate(read_documents(path)):
        title = str(doc.meta.get("title") or doc.text.strip().split("\n", 1)[0][:120])
        pages.append(Page(id=doc.id or f"doc-{i}", title=title, text=doc.text))
    return Collection(name or Path(path).stem, pages, _pattern_extractor, env_config={"collection_path": str(path)})


def find_passages(text: str, needle: str, k: int = 5, width: int = 600) -> list[str]:
    """Up to `k` blank-line-separated passages of `text` that contain `needle` (case-folded)."""
    needle = needle.casefold().strip()
    out = []
    for passage in re.split(r"\n\s*\n", text):
        if needle in passage.casefold():
            out.append(passage if len(passage) <= width else passage[: width - 3] + "...")
            if len(out) == k:
                break
    return out


# ---- answers --------------------------------------------------------------------------------

_ANSWER = re.compile(r"answer\s*[:：]\s*(.+)", re.IGNORECASE | re.DOTALL)
_ARTICLES = re.compile(r"^(the|a|an)\s+")


def extract_answer(content: str) -> str:
    """The text after the last "Answer:" (its first line), else the whole content."""
    found = _ANSWER.findall(content)
    text = found[-1] if found else content
    return text.strip().split("\n", 1)[0].strip()


def normalize_answer(text: str) -> str:
    text = text.casefold().replace("`", " ")
    text = text.translate(str.maketrans({c: " " for c in string.punctuation if c not in "._-"}))
    text = " ".join(text.split()).strip(" .")
    return _ARTICLES.sub("", text)


def answer_matches(content: str, gold: str, aliases: Iterable[str] = ()) -> bool:
    got = normalize_answer(extract_answer(content))
    return any(got == normalize_answer(g) for g in (gold, *aliases))


# ---- the environment ------------------------------------------------------------------------

SEARCH_TOOLS = [
    {"type": "function", "function": {
        "name": "search", "description": "Search the collection; returns the best-matching pages (id, title, snippet).",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string", "description": "keywords", "minLength": 1}},
            "required": ["query"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "open_page", "description": "Read a page of the collection by its id (long pages are cut).",
        "parameters": {"type": "object", "properties": {
            "id": {"type": "string", "description": "a page id returned by search"}},
            "required": ["id"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "find_in_page", "description": "The passages of a page that contain a text (case-insensitive).",
        "parameters": {"type": "object", "properties": {
            "id": {"type": "string", "description": "a page id"},
            "text": {"type": "string", "description": "the text to look for", "minLength": 1}},
            "required": ["id", "text"], "additionalProperties": False}}},
]

SYSTEM_PROMPT = ("You answer questions by researching a document collection with the tools search, "
                 "open_page and find_in_page. The questions need several facts found on different pages; intermediate "
                 "entities are not named, so look each one up in turn. When you know the answer, reply "
                 "without calling a tool, ending with a line 'Answer: <the answer>'.")


class SearchEnv(ToolEnvironment):
    """Tasks: records from `Collection.questions` (`question`, `answer`, optional `aliases`)."""

    def __init__(self, collection: Collection, max_turns: int = 16, *, top_k: int = 5,
                 max_page_chars: int = 4000) -> None:
        super().__init__(max_turns)
        self.collection = collection
        self.top_k = top_k
        self.max_page_chars = max_page_chars

    def _start(self, task: Any) -> tuple[list[Message], list[dict]]:
        if not isinstance(task, dict) or not isinstance(task.get("question"), str) \
                or not isinstance(task.get("answer"), str):
            raise EnvError(f"a search task needs string 'question' and 'answer' fields, got {str(task)[:200]}")
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task["question"]}], \
            SEARCH_TOOLS

    def call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        if name == "search":
            return json.dumps(self.collection.search(arguments["query"], self.top_k), ensure_ascii=False)
        page = self.collection.by_id.get(arguments["id"])
        if page is None:
            return json.dumps({"error": f"no page with id {arguments['id']!r}; use an id from search results"})
        if name == "find_in_page":
            return json.dumps({"id": page.id, "title": page.title,
                               "passages": find_passages(page.text, arguments["text"])}, ensure_ascii=False)
        text = page.text if len(page.text) <= self.max_page_chars else page.text[: self.max_page_chars] + " [...]"
        return json.dumps({"id": page.id, "title": page.title, "text": text}, ensure_ascii=False)

    def _text_turn(self, turn: Turn) -> Step:
        correct = answer_matches(turn.content, self.task["answer"], self.task.get("aliases", ()))
        return Step(None, float(correct), True, {"answer": extract_answer(turn.content), "correct": correct})


# ---- scripted agents ------------------------------------------------------------------------


def _call(name: str, **arguments: Any) -> Message:
    return {"role": "assistant", "content": "", "tool_calls": [{"name": name, "arguments": arguments}]}


QUERY_STYLES = ("entity", "question")
WRONG_ANSWERS = ("random", "subject")


class OracleSearcher:
    """Follows the task's hop path through the tools: search the entity, open the page titled
    with it first (then the other results), read the relation's object off the page (looking
    inside a long page with find_in_page), go on; then answer.

    `query="question"` makes the first search the question itself, verbatim (later hops still
    search the entity found, which the question does not name). BM25 finds the start page from
    the question as well (top hit for 69 of 70 held-out 1-hop questions), and a small model can
    learn to repeat its prompt long before it learns to pick a name out of it.

    `read_snippets=True` also reads the facts in the search results' snippets, so a hop whose
    fact a snippet states needs no open_page (with the question as the query, the top snippet
    states the answer for about half of the 1-hop questions)."""

    def __init__(self, task: dict, collection: Collection, query: str = "entity", read_snippets: bool = False) -> None:
        if query not in QUERY_STYLES:
            raise ValueError(f"query must be one of {QUERY_STYLES}, got {query!r}")
        self.task, self.collection = task, collection
        self.query, self.read_snippets = query, read_snippets
        self.hop = 0
        self.entity = task["hops"][0]["subject"]
        self.results: list[str] = []
        self.answer: str | None = None

    def _read_result(self, messages: list[Message]) -> None:
        last = messages[-1]
        if last["role"] != "tool":
            return
        data = json.loads(last["content"])
        if isinstance(data, list):  # search results
            self.results = [("open", r["id"]) for r in sorted(data, key=lambda r: r["title"] != self.entity)]
            if self.read_snippets:
                for r in data:
                    if self._learn(self._facts(Page(r["id"], r["title"], r.get("snippet", "")))):
                        break
        elif "text" in data or "passages" in data:
            text = data["text"] if "text" in data else "\n\n".join(data["passages"])
            found = self._facts(Page(data["id"], data["title"], text))
            if not found and data.get("text", "").endswith("[...]"):  # a long page: look inside it
                self.results.insert(0, ("find", data["id"]))
            self._learn(found)

    def _facts(self, page: Page) -> list[str]:
        """Objects of the current hop's relation of the current entity stated on `page`."""
        relation = self.task["hops"][self.hop]["relation"]
        return [t.object for t in self.collection.extractor(page) if t.subject == self.entity and t.relation == relation]

    def _learn(self, found: list[str]) -> bool:
        """Take the hop's fact when found: the answer after the last hop, else the next entity."""
        if not found:
            return False
        self.hop += 1
        self.results = []
        if self.hop == len(self.task["hops"]):
            self.answer = found[0]
        else:
            self.entity = found[0]
        return True

    def act(self, messages: list[Message], tools: list[dict]) -> Message:
        self._read_result(messages)
        return self._next_action()

    def _next_action(self) -> Message:
        if self.answer is not None:
            return {"role": "assistant", "content": f"Answer: {self.answer}"}
        if self.results:
            how, page_id = self.results.pop(0)
            if how == "find":
                return _call("find_in_page", id=page_id, text=self.entity)
            return _call("open_page", id=page_id)
        if self.hop == 0 and self.query == "question":
            return _call("search", query=self.task["question"])
        return _call("search", query=self.entity)


class NoisySearcher(OracleSearcher):
    """The oracle, except that each action is wasted with probability `noise` (a query made of
    random words of the question, or a random page), and with probability `wrong` the final
    answer is wrong: a random page's title, or (`wrong_answer="subject"`) the question's own
    subject, a searcher that echoes what it looked up instead of what it read. With probability
    `guess` it answers at once, before any search, with such a wrong answer (a searcher that
    skips the work). Seeded per task, so one task's trajectory is the same at every budget:
    accuracy can only grow with the number of allowed turns."""

    def __init__(self, task: dict, collection: Collection, noise: float = 0.4, wrong: float = 0.1,
                 seed: int = 0, query: str = "entity", read_snippets: bool = False,
                 wrong_answer: str = "random", guess: float = 0.0) -> None:
        super().__init__(task, collection, query, read_snippets)
        if wrong_answer not in WRONG_ANSWERS:
            raise ValueError(f"wrong_answer must be one of {WRONG_ANSWERS}, got {wrong_answer!r}")
        self.noise, self.wrong, self.wrong_answer = noise, wrong, wrong_answer
        self.rng = random.Random(f"glm45.envs.search.noisy/{seed}/{task['id']}")
        self.last_real = True
        # drawn only when asked for, so a searcher without it plays exactly as before
        self.guesses = guess > 0 and self.rng.random() < guess

    def _wrong_answer(self) -> Message:
        guess = (self.task["hops"][0]["subject"] if self.wrong_answer == "subject"
                 else self.rng.choice(self.collection.pages).title)
        return {"role": "assistant", "content": f"Answer: {guess}"}

    def act(self, messages: list[Message], tools: list[dict]) -> Message:
        if self.guesses:
            return self._wrong_answer()
        if self.last_real:  # what a wasted action returned is ignored
            self._read_result(messages)
        self.last_real = self.rng.random() >= self.noise
        if not self.last_real:
            if self.rng.random() < 0.5:
                words = self.task["question"].rstrip("?").split()
                return _call("search", query=" ".join(self.rng.sample(words, min(2, len(words)))))
            return _call("open_page", id=self.rng.choice(self.collection.pages).id)
        if self.answer is not None and self.rng.random() < self.wrong:
            return self._wrong_answer()
        return self._next_action()


@functools.lru_cache(maxsize=8)
def _cached_file_collection(path: str) -> Collection:
    return load_collection(path)


def _make_search_env(collection: str | Collection = "synthetic", seed: int = 0, collection_path: str | None = None,
                     max_turns: int = 16, top_k: int = 5, max_page_chars: int = 4000, **options: Any) -> SearchEnv:
    """`make_env("search", **task["env_config"])`: a built-in collection by name (with its
    options), a JSONL corpus by `collection_path`, or a `Collection` object."""
    if collection_path is not None:
        coll = _cached_file_collection(str(collection_path))
    elif isinstance(collection, Collection):
        coll = collection
    else:
        coll = builtin_collection(collection, seed, **options)
    return SearchEnv(coll, max_turns, top_k=top_k, max_page_chars=max_page_chars)


register_env("search", _make_search_env)
