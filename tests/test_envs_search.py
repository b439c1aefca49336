"""The search agent: BM25, knowledge graphs, question synthesis, the environment, turn scaling."""

from __future__ import annotations

import json
import math

import pytest

from glm45.envs import ScriptedPolicy, accuracy_by_turns, make_env, run_episodes
from glm45.envs.kg import KnowledgeGraph, RELATIONS, Triple, docstring_triples, extract_triples, synthetic_world
from glm45.envs.search import (
    BM25, NoisySearcher, OracleSearcher, SearchEnv, answer_matches, builtin_collection, load_collection, tokenize,
)


@pytest.fixture(scope="module")
def world():
    return builtin_collection("synthetic", seed=0)


@pytest.fixture(scope="module")
def questions(world):
    return world.questions(60, seed=5)


def test_bm25_matches_the_formula():
    docs = [tokenize(t) for t in ("the cat sat on the mat", "the dog", "cat cat cat", "a bird")]
    index = BM25(docs, k1=1.2, b=0.75)
    avg = sum(map(len, docs)) / len(docs)

    def expected(query, d):
        s = 0.0
        for term in set(query):
            df = sum(term in doc for doc in docs)
            tf = docs[d].count(term)
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            s += idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * len(docs[d]) / avg)) if tf else 0.0
        return s

    q = ["cat", "mat"]
    assert [round(x, 9) for x in index.scores(q)] == [round(expected(q, d), 9) for d in range(4)]
    assert [i for i, _ in index.top(q, 2)] == [0, 2]
    assert index.top(["zebra"], 3) == []
    assert tokenize("open_page HTTPServer") == ["open_page", "open", "page", "httpserver"]


def test_extractor_recovers_the_known_graph():
    kg, pages = synthetic_world(seed=1)
    extracted = {t for p in pages for t in extract_triples(p.text)}
    assert extracted == set(kg.triples) and len(kg) > 300
    assert extract_triples("Acme Works was founded by Jane Roe. The capital of Freedonia is Fredville.") == [
        Triple("Acme Works", "founded_by", "Jane Roe"), Triple("Freedonia", "capital", "Fredville")]


def test_docstring_triples():
    doc = "mod\n===\n\nclass Widget\n    A widget.\n\nWidget.frobnicate(x)\n    Frob.\n\nnot.an_entry() -- prose\nmore"
    assert docstring_triples("mod", doc) == [Triple("Widget", "defined_in", "mod"),
                                             Triple("frobnicate", "method_of", "Widget")]


def test_questions_follow_their_hops(world, questions):
    kg = world.graph
    assert len({q["question"] for q in questions}) == len(questions)
    assert {len(q["hops"]) for q in questions} == {1, 2, 3}
    for q in questions:
        node = q["start"]
        for hop in q["hops"]:
            assert hop["subject"] == node and kg.out[node][hop["relation"]] == hop["object"]
            node = hop["object"]
        assert q["answer"] == node
        # intermediate entities are never named in the question
        for hop in q["hops"][1:]:
            assert hop["subject"] not in q["question"]
        if q["obfuscated"]:
            assert q["start"] not in q["question"]
    assert sum(q["obfuscated"] for q in questions) >= 10


def test_obfuscating_descriptions_are_unique():
    kg, _ = synthetic_world(seed=2)
    import random

    rng = random.Random(0)
    for entity in kg.of_type("company")[:10]:
        text = kg.describe(entity, rng)
        if text is None:
            continue
        clauses = text.removeprefix("the company ").split(" and ")
        matching = [e for e in kg.of_type("company") if all(
            any(RELATIONS[r].clause.format(o=o) == c for r, o in kg.out[e].items()) for c in clauses)]
        assert matching == [entity], text


def test_tools_and_planted_answers(world, questions):
    q = next(q for q in questions if len(q["hops"]) == 2)
    env = SearchEnv(world, max_turns=8)
    env.reset(q)
    hits = json.loads(env.step({"role": "assistant", "tool_calls": [
        {"name": "search", "arguments": {"query": q["start"]}}]}).observation[0]["content"])
    assert q["start"] in [h["title"] for h in hits]
    page_id = next(h["id"] for h in hits if h["title"] == q["start"])
    page = json.loads(env.step({"role": "assistant", "tool_calls": [
        {"name": "open_page", "arguments": {"id": page_id}}]}).observation[0]["content"])
    assert q["hops"][0]["object"] in page["text"]
    missing = json.loads(env.step({"role": "assistant", "tool_calls": [
        {"name": "open_page", "arguments": {"id": "no/such"}}]}).observation[0]["content"])
    assert "error" in missing  # a failed lookup is an observation, not the end
    obs, reward, done, info = env.step(f"<think>found it</think>\nAnswer: {q['answer'].upper()}")
    assert done and reward == 1.0 and info["correct"]
    env.reset(q)
    assert env.step("Answer: " + q["hops"][0]["object"]).reward == 0.0  # the intermediate entity is wrong
    env.reset(q)
    r = env.step("<tool_call>search\n<arg_key>q</arg_key>\n<arg_value>x</arg_value>\n</tool_call>")
    assert r.done and r.reward == 0.0 and r.info["end"] == "format_error"


def test_answer_matching():
    assert answer_matches("I searched a lot.\nAnswer: the  Velmor Works.", "Velmor Works")
    assert answer_matches("`idlelib.help_about`", "idlelib.help_about")
    assert not answer_matches("Answer: Velmor", "Velmor Works")
    assert answer_matches("Answer: 1961", "1961") and not answer_matches("Answer: 1962", "1961")


def test_oracle_and_noisy_accuracy_against_turns(world, questions):
    def make(budget):
        return SearchEnv(world, max_turns=budget)

    budgets = [1, 3, 5, 7, 11, 17, 25]
    oracle = accuracy_by_turns(make, questions, lambda: ScriptedPolicy(lambda t: OracleSearcher(t, world)), budgets)
    noisy = accuracy_by_turns(make, questions, lambda: ScriptedPolicy(lambda t: NoisySearcher(t, world)), budgets)
    # the oracle needs 2 turns per hop plus the answer, and always gets there
    assert oracle[1] == 0.0 and oracle[7] == 1.0 and oracle[25] == 1.0
    one_hop = sum(len(q["hops"]) == 1 for q in questions) / len(questions)
    assert oracle[3] == pytest.approx(one_hop)
    # the noisy agent: accuracy rises with the budget (Figure 8) and stays below the oracle early
    values = [noisy[b] for b in budgets]
    assert values == sorted(values) and values[-1] >= 0.6 and noisy[7] < oracle[7] - 0.2


def test_oracle_searching_with_the_question_itself(world, questions):
    """query="question": the first search is the question verbatim and still reaches the answer
    (BM25 ranks the start page first); later hops search the entities found."""
    named = [q for q in questions if not q["obfuscated"]]
    envs = [SearchEnv(world, max_turns=12) for _ in named]
    results = run_episodes(envs, named, ScriptedPolicy(lambda t: OracleSearcher(t, world, query="question")))
    for q, r in zip(named, results):
        calls = [c["function"] for m in r.messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]
        searches = [c["arguments"]["query"] for c in calls if c["name"] == "search"]
        assert searches[0] == q["question"] and q["question"] not in searches[1:]
    assert sum(r.reward for r in results) >= 0.95 * len(named)
    with pytest.raises(ValueError, match="query must be one of"):
        OracleSearcher(named[0], world, query="keywords")
    # Reading the snippets: where a result's snippet states the fact, no page is opened.
    envs = [SearchEnv(world, max_turns=12) for _ in named]
    skim = run_episodes(envs, named, ScriptedPolicy(
        lambda t: OracleSearcher(t, world, query="question", read_snippets=True)))
    one_hop = sum(len(q["hops"]) == 1 for q in named)
    short = [r for r in skim if [m.get("tool_calls") is not None for m in r.messages if m["role"] == "assistant"]
             == [True, False]]
    assert one_hop >= 10 and len(short) >= one_hop // 3 and all(r.reward == 1.0 for r in short)
    assert sum(r.reward for r in skim) >= 0.95 * len(named)


def test_user_corpus_jsonl(tmp_path):
    docs = [{"id": "a", "title": "Acme Works", "text": "Acme Works was founded by Jane Roe. Acme Works was "
             "established in 1901."},
            {"id": "j", "title": "Jane Roe", "text": "Jane Roe was born in the city of Fredville."},
            {"id": "f", "title": "Fredville", "text": "Fredville is a city in Freedonia."}]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in docs))
    coll = load_collection(str(path))
    assert len(coll.graph) == 4
    qs = coll.questions(2, seed=0, hops=(2,), obfuscate=0.0)
    assert {q["answer"] for q in qs} == {"Fredville", "Freedonia"}
    assert all(q["env_config"] == {"collection_path": str(path)} for q in qs)
    env = make_env("search", **qs[0]["env_config"])
    results = run_episodes([env], qs[:1], ScriptedPolicy(lambda t: OracleSearcher(t, coll)))
    assert results[0].reward == 1.0


def test_stdlib_collection_is_solvable():
    coll = builtin_collection("stdlib", max_modules=80)
    qs = coll.questions(10, seed=0)
    assert all(q["hops"][0]["relation"] == "method_of" and q["hops"][1]["relation"] == "defined_in" for q in qs)
    results = run_episodes([SearchEnv(coll, max_turns=12) for _ in qs], qs,
                           ScriptedPolicy(lambda t: OracleSearcher(t, coll)))
    assert sum(r.reward for r in results) >= 8


def test_graph_drops_ambiguous_facts():
    kg = KnowledgeGraph([Triple("A", "founded_by", "X"), Triple("A", "founded_by", "Y"),
                         Triple("B", "founded_by", "X")])
    assert "founded_by" not in kg.out["A"] and kg.subjects_with("founded_by", "X") == ["B"]


def test_world_scale_multiplies_the_world_and_at_most_exhausts_it():
    from glm45.envs.kg import KGError, synthesize_questions

    small, _ = synthetic_world(0)
    big, pages = synthetic_world(0, scale=3)
    assert len(big) == 3 * len(small) and len({p.title for p in pages}) == len(pages)
    assert extract_triples(" ".join(p.text for p in pages)) and len(big.of_type("person")) == 3 * 60
    with pytest.raises(KGError, match="scale"):
        synthetic_world(0, scale=0)
    # one-hop questions naming their start: one per fact, no more
    one_hop = dict(hops=1, obfuscate=0.0)
    every = synthesize_questions(small, 10_000, 0, at_most=True, **one_hop)
    assert len(every) == len({(t.subject, t.relation) for t in small.triples}) == len(small)
    with pytest.raises(KGError, match=f"found only {len(small)}"):
        synthesize_questions(small, len(small) + 1, 0, **one_hop)
    # the scaled world is a collection option that travels with each task's env_config
    coll = builtin_collection("synthetic", 0, scale=3)
    q = coll.questions(3, seed=0, **one_hop)[0]
    env = make_env("search", **q["env_config"])
    assert q["env_config"]["scale"] == 3 and env.collection is coll
    result = run_episodes([env], [q], ScriptedPolicy(lambda t: OracleSearcher(t, coll, query="question")))[0]
    assert result.reward == 1.0
