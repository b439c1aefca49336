"""Knowledge graphs for the search agent: triples, extraction from text, multi-hop questions.

Two sources of triples:
- `synthetic_world(seed)`: encyclopedia-style pages about invented people, companies,
  universities, cities and countries, written from known triples (so the graph is exact).
- `extract_triples(text)`: a pattern-based extractor for encyclopedic English ("X was founded
  by Y.", "The capital of X is Y."); the patterns are the sentence templates of `RELATIONS`, so
  it recovers the synthetic world's graph from its pages and finds the same facts in any text
  written that way. `docstring_triples` reads the structure of a Python API document (the
  built-in standard-library collection): which module defines a class, which class a method.

Question synthesis (§3.3.1, "multi-hop reasoning over knowledge graphs ... selective
obfuscation"): a walk start -r1-> e1 -r2-> ... -rk-> answer becomes a nested question, "What is
the country of the birthplace of the founder of Kestrine Labs?". The intermediate entities are
never named — the agent must discover each one — and with probability `obfuscate` the start is
not named either but described by other facts that single it out ("the company founded in 1987
that operates in the robotics industry").
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

__all__ = ["KGError", "KnowledgeGraph", "Page", "Relation", "RELATIONS", "Triple", "docstring_triples",
           "extract_triples", "pseudo_word", "synthesize_questions", "synthetic_world"]


class KGError(ValueError):
    """Bad knowledge-graph input: an unknown relation, a graph too small for the questions asked."""


@dataclass(frozen=True)
class Triple:
    subject: str
    relation: str
    object: str


@dataclass(frozen=True)
class Relation:
    name: str
    subject_type: str
    object_type: str  # an entity type, or "year" / "word" for literal values
    sentence: str  # how a page states it: "{s} was founded by {o}."
    noun: str  # the object as a noun phrase of the subject: "the founder of {x}"
    clause: str  # a description of the subject by the object: "founded by {o}"

    @property
    def literal(self) -> bool:
        return self.object_type in ("year", "word")


ENTITY_NOUNS = {"person": "the person", "company": "the company", "university": "the university",
                "city": "the city", "country": "the country", "class": "the class", "module": "the module",
                "method": "the method"}

RELATIONS: dict[str, Relation] = {r.name: r for r in [
    Relation("born_in", "person", "city", "{s} was born in the city of {o}.", "the birthplace of {x}",
             "who was born in {o}"),
    Relation("birth_year", "person", "year", "{s} was born in the year {o}.", "the birth year of {x}",
             "born in {o}"),
    Relation("works_for", "person", "company", "{s} works at {o}.", "the employer of {x}", "who works at {o}"),
    Relation("studied_at", "person", "university", "{s} studied at {o}.", "the university that {x} attended",
             "who studied at {o}"),
    Relation("founded_by", "company", "person", "{s} was founded by {o}.", "the founder of {x}", "founded by {o}"),
    Relation("headquartered_in", "company", "city", "{s} is headquartered in {o}.",
             "the city where {x} is headquartered", "headquartered in {o}"),
    Relation("founded_year", "company", "year", "{s} was established in {o}.", "the founding year of {x}",
             "established in {o}"),
    Relation("industry", "company", "word", "{s} operates in the {o} industry.", "the industry of {x}",
             "that operates in the {o} industry"),
    Relation("located_in", "university", "city", "{s} is located in {o}.", "the city where {x} is located",
             "located in {o}"),
    Relation("opened_year", "university", "year", "{s} opened its doors in {o}.",
             "the year {x} opened", "that opened in {o}"),
    Relation("country", "city", "country", "{s} is a city in {o}.", "the country of {x}", "that lies in {o}"),
    Relation("mayor", "city", "person", "The mayor of {s} is {o}.", "the mayor of {x}", "whose mayor is {o}"),
    Relation("capital", "country", "city", "The capital of {s} is {o}.", "the capital of {x}",
             "whose capital is {o}"),
    Relation("currency", "country", "word", "The currency of {s} is the {o}.", "the currency of {x}",
             "whose currency is the {o}"),
    # the structure of an API reference (docstring_triples)
    Relation("method_of", "method", "class", "{s} is a method of the class {o}.",
             "the class that has a method named {x}", "of the class {o}"),
    Relation("defined_in", "class", "module", "{s} is defined in the module {o}.", "the module that defines {x}",
             "defined in {o}"),
]}

_NAME = r"[A-Z][A-Za-z'-]*(?: (?:of |de |la )?[A-Z][A-Za-z'-]*)*"
_VALUE = {"year": r"\d{3,4}", "word": r"[A-Za-z][A-Za-z-]*(?: [A-Za-z][A-Za-z-]*)?"}


def _pattern(rel: Relation) -> re.Pattern[str]:
    obj = _VALUE.get(rel.object_type, _NAME)
    parts = re.split(r"(\{s\}|\{o\})", rel.sentence)
    regex = "".join("(?P<s>" + _NAME + ")" if p == "{s}" else "(?P<o>" + obj + ")" if p == "{o}" else re.escape(p)
                    for p in parts)
    return re.compile(regex)


_PATTERNS = {name: _pattern(rel) for name, rel in RELATIONS.items() if rel.subject_type not in ("method", "class")}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def extract_triples(text: str) -> list[Triple]:
    """Facts stated in `text` in the encyclopedic patterns of `RELATIONS`, in order of appearance."""
    out = []
    for sentence in _SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        for name, pattern in _PATTERNS.items():
            m = pattern.fullmatch(sentence)
            if m:
                out.append(Triple(m["s"], name, m["o"]))
    return out


_API_ENTRY = re.compile(r"^(class )?([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?(\(.*)?$")


def docstring_triples(module: str, document: str) -> list[Triple]:
    """Structure of an API document written by `glm45.data.builtin.docstring_document`: an entry
    (a line followed by its indented docstring) `class C` gives (C defined_in module); `C.m(...)`
    gives (m method_of C). Works on a passage of such a document too."""
    lines = document.splitlines()
    entries = [m.groups() for line, after in zip(lines, lines[1:] + [""])
               if line and not line[0].isspace() and after.startswith("    ") and (m := _API_ENTRY.match(line))]
    classes = {head for is_class, head, member, args in entries if is_class and member is None and args is None}
    out = [Triple(c, "defined_in", module) for c in sorted(classes)]
    out += [Triple(member, "method_of", head) for is_class, head, member, args in entries
            if not is_class and member is not None and args is not None]
    return out


# ---- the graph ------------------------------------------------------------------------------


class KnowledgeGraph:
    """Triples indexed both ways. Relations are functional: one object per (subject, relation)."""

    def __init__(self, triples: Iterable[Triple], types: dict[str, str] | None = None) -> None:
        self.triples: list[Triple] = []
        self.out: dict[str, dict[str, str]] = defaultdict(dict)
        self.ins: dict[tuple[str, str], list[str]] = defaultdict(list)
        ambiguous: set[tuple[str, str]] = set()
        for t in triples:
            if t.relation not in RELATIONS:
                raise KGError(f"unknown relation {t.relation!r}; known: {sorted(RELATIONS)}")
            prev = self.out[t.subject].get(t.relation)
            if prev is not None and prev != t.object:
                ambiguous.add((t.subject, t.relation))
            if prev is None:
                self.out[t.subject][t.relation] = t.object
                self.ins[(t.relation, t.object)].append(t.subject)
                self.triples.append(t)
        for subject, relation in ambiguous:  # a name with two different answers cannot anchor a question
            obj = self.out[subject].pop(relation)
            self.ins[(relation, obj)].remove(subject)
            self.triples = [t for t in self.triples if (t.subject, t.relation) != (subject, relation)]
        self.types = dict(types or {})
        for t in self.triples:  # types follow from the relations where not given
            rel = RELATIONS[t.relation]
            self.types.setdefault(t.subject, rel.subject_type)
            if not rel.literal:
                self.types.setdefault(t.object, rel.object_type)

    def __len__(self) -> int:
        return len(self.triples)

    def of_type(self, kind: str) -> list[str]:
        return sorted(e for e, k in self.types.items() if k == kind)

    def subjects_with(self, relation: str, obj: str) -> list[str]:
        return list(self.ins.get((relation, obj), []))

    def describe(self, entity: str, rng: random.Random, max_facts: int = 2, exclude: Sequence[str] = ()) -> str | None:
        """A description that singles `entity` out among entities of its type by its facts
        ("the company founded by X and headquartered in Y"), or None if its facts do not.
        Relations in `exclude` are not used (the question's own first hop would give it away)."""
        kind = self.types.get(entity)
        facts = [(r, o) for r, o in sorted(self.out.get(entity, {}).items())
                 if RELATIONS[r].subject_type == kind and r not in exclude]
        if kind not in ENTITY_NOUNS or not facts:
            return None
        rng.shuffle(facts)
        peers = set(self.of_type(kind))
        chosen = []
        for rel, obj in facts[:max_facts]:
            chosen.append((rel, obj))
            peers &= set(self.subjects_with(rel, obj))
            if peers == {entity}:
                clauses = [RELATIONS[r].clause.format(o=o) for r, o in chosen]
                return f"{ENTITY_NOUNS[kind]} {' and '.join(clauses)}"
        return None


# ---- question synthesis ---------------------------------------------------------------------


def _walk(kg: KnowledgeGraph, start: str, hops: int, rng: random.Random) -> list[Triple] | None:
    path, node, seen = [], start, {start}
    for k in range(hops):
        last = k == hops - 1
        options = [(r, o) for r, o in sorted(kg.out.get(node, {}).items())
                   if (last or not RELATIONS[r].literal) and o not in seen
                   and RELATIONS[r].subject_type == kg.types.get(node)]
        if not options:
            return None
        rel, obj = rng.choice(options)
        path.append(Triple(node, rel, obj))
        node = obj
        seen.add(obj)
    return path


def _question_text(path: Sequence[Triple], start_phrase: str) -> str:
    phrase = start_phrase
    for t in path:
        phrase = RELATIONS[t.relation].noun.format(x=phrase)
    return f"What is {phrase}?"


def synthesize_questions(kg: KnowledgeGraph, n: int, seed: int = 0, *, hops: int | Sequence[int] = (1, 2, 3),
                         obfuscate: float = 0.5, start_types: Sequence[str] | None = None,
                         unique_names: set[str] | None = None, at_most: bool = False) -> list[dict]:
    """`n` distinct questions from random walks of `hops` steps (one length or a choice of them).

    Each record: `id`, `question`, `answer`, `hops` (the path as triples, for oracles and
    analysis; never shown to the agent), `start`, `obfuscated`. `unique_names`, when given, are
    the only entities a question may name (e.g. method names that occur once in a corpus).
    A graph with fewer than `n` distinct questions raises `KGError`, or with `at_most` gives
    the ones it has (the walks stop once new questions have stopped turning up).
    """
    lengths = [hops] if isinstance(hops, int) else list(hops)
    if not lengths or min(lengths) < 1:
        raise KGError(f"hops must be positive, got {hops!r}")
    rng = random.Random(f"glm45.envs.kg/{seed}")
    starts = sorted(e for e in kg.out if (start_types is None or kg.types.get(e) in start_types)
                    and (unique_names is None or e in unique_names))
    if not starts:
        raise KGError("the knowledge graph has no entity to start a question from "
                      f"({len(kg)} triples; start types {start_types})")
    out, seen, stalled = [], set(), 0
    for _ in range(200 * n):
        if len(out) == n or stalled > 50 * (len(out) + 100):  # the graph has run out of new questions
            break
        stalled += 1
        start, k = rng.choice(starts), rng.choice(lengths)
        path = _walk(kg, start, k, rng)
        if path is None:
            continue
        described = kg.describe(start, rng, exclude=[path[0].relation]) if rng.random() < obfuscate else None
        question = _question_text(path, described or start)
        if question in seen:
            continue
        seen.add(question)
        stalled = 0
        out.append({"id": f"kgq-{seed}-{len(out)}", "question": question, "answer": path[-1].object,
                    "hops": [asdict(t) for t in path], "start": start, "obfuscated": described is not None})
    if len(out) < n and not at_most:
        raise KGError(f"found only {len(out)} distinct questions of {lengths} hops in a graph of {len(kg)} triples "
                      f"(asked for {n})")
    return out


# ---- the synthetic world --------------------------------------------------------------------


@dataclass
class Page:
    id: str
    title: str
    text: str


_SYLLABLES = ("ka", "vel", "mor", "tan", "ri", "zo", "lin", "dar", "se", "quo", "bri", "ent", "ola", "fen",
              "gar", "hul", "ist", "jor", "kes", "lum", "nav", "orn", "pel", "rud", "sav", "tor", "ul", "wen",
              "yar", "zil", "cor", "mab", "thal", "ven", "dro", "sil")
_COMPANY_SUFFIX = ("Labs", "Industries", "Systems", "Works", "Dynamics", "Holdings")
_UNI_FORMS = ("{} University", "{} Institute of Technology", "University of {}")
_INDUSTRIES = ("robotics", "shipping", "textiles", "pharmaceuticals", "aerospace", "agriculture", "mining",
               "software", "publishing", "energy")
_CURRENCIES = ("dunar", "krell", "sovar", "lumen", "talon", "merit", "florin", "obol", "riyal", "crest",
               "pennant", "groat", "sol", "marka")
_OCCUPATIONS = ("an engineer", "a chemist", "an architect", "an economist", "a sculptor", "a physician",
                "a historian", "an investor", "a novelist", "a geologist")


def pseudo_word(rng: random.Random, n: tuple[int, int] = (2, 3), syllables: Sequence[str] = _SYLLABLES) -> str:
    """A capitalised invented word of `n` (min, max) random syllables."""
    return "".join(rng.choice(syllables) for _ in range(rng.randint(*n))).capitalize()


def synthetic_world(seed: int = 0, *, scale: int = 1, n_countries: int = 8, n_cities: int = 24, n_people: int = 60,
                    n_companies: int = 24, n_universities: int = 10) -> tuple[KnowledgeGraph, list[Page]]:
    """Invented entities, their facts, and one encyclopedia page per entity (deterministic).
    `scale` multiplies every count: a larger world has more distinct questions than a small
    model can memorise, so answering them takes reading the pages."""
    if not isinstance(scale, int) or scale < 1:
        raise KGError(f"scale must be a positive integer, got {scale!r}")
    n_countries, n_cities, n_people = n_countries * scale, n_cities * scale, n_people * scale
    n_companies, n_universities = n_companies * scale, n_universities * scale
    rng = random.Random(f"glm45.envs.kg.world/{seed}")
    used: set[str] = set()

    def fresh(make) -> str:
        for _ in range(1000):
            name = make()
            if name not in used and not any(w in used for w in name.split()):
                used.add(name)
                used.update(w for w in name.split() if w not in ("of", "University", "Institute", "Technology")
                            and w not in _COMPANY_SUFFIX)
                return name
        raise KGError("ran out of distinct names; use a smaller world")

    countries = [fresh(lambda: pseudo_word(rng) + rng.choice(("ia", "land", "or", "ara"))) for _ in range(n_countries)]
    cities = [fresh(lambda: pseudo_word(rng)) for _ in range(n_cities)]
    people = [fresh(lambda: f"{pseudo_word(rng, (2, 2))} {pseudo_word(rng)}") for _ in range(n_people)]
    companies = [fresh(lambda: f"{pseudo_word(rng)} {rng.choice(_COMPANY_SUFFIX)}") for _ in range(n_companies)]
    universities = [fresh(lambda: rng.choice(_UNI_FORMS).format(pseudo_word(rng))) for _ in range(n_universities)]

    triples: list[Triple] = []
    add = lambda s, r, o: triples.append(Triple(s, r, str(o)))  # noqa: E731
    for i, city in enumerate(cities):
        add(city, "country", countries[i % n_countries])  # every country gets cities
        add(city, "mayor", rng.choice(people))
    for i, country in enumerate(countries):
        add(country, "capital", cities[i])  # city i lies in country i (i < n_countries)
        add(country, "currency", rng.choice(_CURRENCIES))
    for person in people:
        add(person, "born_in", rng.choice(cities))
        add(person, "birth_year", rng.randint(1930, 1995))
        add(person, "works_for", rng.choice(companies))
        add(person, "studied_at", rng.choice(universities))
    for company in companies:
        add(company, "founded_by", rng.choice(people))
        add(company, "headquartered_in", rng.choice(cities))
        add(company, "founded_year", rng.randint(1850, 2015))
        add(company, "industry", rng.choice(_INDUSTRIES))
    for uni in universities:
        add(uni, "located_in", rng.choice(cities))
        add(uni, "opened_year", rng.randint(1500, 1990))
    types = {**{c: "country" for c in countries}, **{c: "city" for c in cities}, **{p: "person" for p in people},
             **{c: "company" for c in companies}, **{u: "university" for u in universities}}
    kg = KnowledgeGraph(triples, types)

    by_subject: dict[str, list[Triple]] = defaultdict(list)
    for t in kg.triples:
        by_subject[t.subject].append(t)
    pages = []
    for entity in sorted(types, key=lambda e: (types[e], e)):
        facts = list(by_subject[entity])
        rng.shuffle(facts)
        lead = {"person": f"{entity} is {rng.choice(_OCCUPATIONS)}.", "company": f"{entity} is a company.",
                "university": f"{entity} is a university.", "city": f"{entity} is a city.",
                "country": f"{entity} is a country."}[types[entity]]
        sentences = [lead] + [RELATIONS[t.relation].sentence.format(s=entity, o=t.object) for t in facts]
        pages.append(Page(id=f"{types[entity]}/{len(pages)}", title=entity, text=" ".join(sentences)))
    return kg, pages
