"""Declarative stage specs and the builder that turns one into token shards.

A `StageSpec` names its sources (each with a weight = expected epochs in the stage, and the
processing it gets), the sequence length, the packing mode and the FIM rate. It is a
dataclass that loads from a JSON / YAML file or a plain dict, so users point the same
pipeline at their own corpora. Presets follow paper §2.2–2.3 and Figure 3:

  pretrain_general    stage 1: mostly general documents (web, books), some code and math; concat, 4K
  pretrain_upsample   stage 2: code, math and science up-sampled; concat, 4K
  mid_repo_code       repo-level code + issues/PRs/commits; best-fit, 32K
  mid_reasoning       synthetic reasoning (math, science, code competitions); best-fit, 32K
  mid_long_agent      long documents up-sampled + agent trajectories; best-fit, 128K

Per source, documents stream through: read → (min_chars) → rule filters → exact dedup →
MinHash → SemDedup → quality buckets → source weight (repetition) → FIM. Sources are then
chained through a seeded shuffle buffer (so copies of an up-sampled document are spread out),
tokenised, packed and written as shards; the loader's global row shuffle mixes sources
across batches.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from glm45.data.code import event_documents, read_events, repo_documents
from glm45.data.dedup import ExactDedup, MinHashDedup
from glm45.data.document import DataError, Document
from glm45.data.fim import FimTransform
from glm45.data.filters import DocumentFilter, filter_configs
from glm45.data.packing import PACKING_MODES, Packer
from glm45.data.quality import DEFAULT_BUCKET_WEIGHTS, QualityClassifier, QualitySampler, repetitions
from glm45.data.semdedup import SemDedup
from glm45.data.shards import ShardWriter
from glm45.data.sources import read_code_tree, read_source
from glm45.data.tokenize import DocumentTokenizer

SOURCE_FORMATS = ("auto", "jsonl", "parquet", "text", "code", "commits", "repo", "events")
DEDUP_LEVELS = ("none", "exact", "minhash", "semdedup")  # each level includes the ones before it


@dataclass
class SourceSpec:
    name: str
    path: str
    format: str = "auto"  # one of SOURCE_FORMATS; "repo" = code tree → repo-level documents
    weight: float = 1.0  # expected epochs of this source in the stage; 0 < w < 1 subsamples
    text_field: str = "text"
    filter: bool = True  # rule-based cleaning and filtering
    text_filter: dict[str, Any] = field(default_factory=dict)  # TextFilterConfig overrides
    code_filter: dict[str, Any] = field(default_factory=dict)  # CodeFilterConfig overrides
    dedup: str = "minhash"
    minhash_threshold: float = 0.8
    semdedup_eps: float = 0.05
    quality_model: str | None = None  # a saved QualityClassifier directory → percentile buckets
    bucket_weights: list[float] = field(default_factory=lambda: list(DEFAULT_BUCKET_WEIGHTS))
    min_chars: int = 0  # keep only documents at least this long (e.g. long-context up-sampling)
    max_docs: int | None = None


@dataclass
class StageSpec:
    name: str
    seq_len: int
    sources: list[SourceSpec]
    packing: str = "concat"
    fim_rate: float = 0.0  # share of code documents given the FIM transform
    fim_spm_rate: float = 0.5  # share of FIM documents in SPM (rest PSM)
    chat_loss: str = "assistant"
    enable_thinking: bool = True
    shuffle_buffer: int = 10_000
    rows_per_shard: int = 8192
    seed: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if self.packing not in PACKING_MODES:
            raise DataError(f"stage {self.name}: packing must be one of {PACKING_MODES}, got {self.packing!r}")
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise DataError(f"stage {self.name}: seq_len must be an integer >= 2, got {self.seq_len!r}")
        if not self.sources:
            raise DataError(f"stage {self.name}: no sources")
        for s in self.sources:
            if s.format not in SOURCE_FORMATS:
                raise DataError(f"stage {self.name}, source {s.name}: format must be one of {SOURCE_FORMATS}")
            if s.dedup not in DEDUP_LEVELS:
                raise DataError(f"stage {self.name}, source {s.name}: dedup must be one of {DEDUP_LEVELS}")
            if s.weight < 0:
                raise DataError(f"stage {self.name}, source {s.name}: weight must be >= 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any], base_dir: str | Path | None = None) -> "StageSpec":
        """Build from a plain dict; relative source paths resolve against `base_dir`."""
        if not isinstance(d, dict):
            raise DataError(f"a stage spec must be a mapping, got {type(d).__name__}")
        _check_keys(d, cls, "stage")
        sources = []
        for i, s in enumerate(d.get("sources") or []):
            if not isinstance(s, dict):
                raise DataError(f"stage {d.get('name')}: source {i} must be a mapping")
            _check_keys(s, SourceSpec, f"source {s.get('name', i)}")
            s = dict(s)
            if base_dir is not None and not Path(s.get("path", "")).is_absolute():
                s["path"] = str(Path(base_dir) / s["path"])
            try:
                sources.append(SourceSpec(**s))
            except TypeError as e:
                raise DataError(f"source {s.get('name', i)}: {e}") from None
        try:
            return cls(**{**d, "sources": sources})
        except TypeError as e:
            raise DataError(f"stage spec: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_keys(d: dict, cls: type, what: str) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise DataError(f"{what}: unknown keys {sorted(unknown)} (allowed: {sorted(names)})")
    missing = {f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING} - set(d)
    if missing:
        raise DataError(f"{what}: missing required keys {sorted(missing)}")


def load_stages(path: str | Path) -> list[StageSpec]:
    """Stage specs from a JSON or YAML file: one stage mapping, a list, or {"stages": [...]}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such stage spec file")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise DataError("YAML stage specs need PyYAML (pip install pyyaml); or write the spec as JSON") from None
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(data, dict) and "stages" in data:
        data = data["stages"]
    items = data if isinstance(data, list) else [data]
    return [StageSpec.from_dict(d, base_dir=path.parent) for d in items]


def save_stages(stages: list[StageSpec], path: str | Path) -> None:
    Path(path).write_text(json.dumps({"stages": [s.to_dict() for s in stages]}, indent=2))


# ---- presets ---------------------------------------------------------------------------------

# Generated sets: templated problems share most 5-grams and are short and digit-heavy, so
# MinHash and the web filters would discard good samples; only exact duplicates go.
SYNTHETIC_SETS = {"math", "reasoning", "agent"}


def preset_stages(sets: dict[str, str], *, seq_len: int = 4096, mid_seq_len: int | None = None,
                  long_seq_len: int | None = None, seed: int = 0) -> list[StageSpec]:
    """The five stages of paper Figure 3 over named document sets.

    `sets` maps set names to paths; a stage uses those it finds among: web (general text),
    code (source files), math (math/science text), repo (a code tree or repo-level JSONL),
    events (issues/PRs/commits JSONL), reasoning (chat samples with reasoning), agent (tool
    trajectories), long (long documents). Sequence lengths default to the paper's 4K / 32K / 128K
    ratios: mid = 8 × seq_len, long = 32 × seq_len. A stage is left out when none of its core
    sets is given (e.g. no repo-level stage without `repo` or `events`).
    """
    mid = mid_seq_len or 8 * seq_len
    long = long_seq_len or 32 * seq_len

    def src(name: str, weight: float, **kw: Any) -> list[SourceSpec]:
        if name in SYNTHETIC_SETS:  # generated data: web heuristics and near-dedup would only do harm
            kw = {"filter": False, "dedup": "exact", **kw}
        return [SourceSpec(name=name, path=sets[name], weight=weight, **kw)] if name in sets else []

    def stage(name: str, core: tuple[str, ...], sl: int, packing: str, sources: list[SourceSpec], desc: str,
              fim: float = 0.0) -> list[StageSpec]:
        if not any(c in sets for c in core):
            return []
        return [StageSpec(name=name, seq_len=sl, packing=packing, sources=sources, fim_rate=fim, seed=seed,
                          description=desc)]

    stages = [
        *stage("pretrain_general", ("web", "code"), seq_len, "concat",
               src("web", 1.0) + src("code", 0.5) + src("math", 0.5),
               "pre-training stage 1: general documents, some code (with FIM) and math", fim=0.5),
        *stage("pretrain_upsample", ("web", "code", "math"), seq_len, "concat",
               src("web", 0.5) + src("code", 2.0) + src("math", 3.0),
               "pre-training stage 2: source code, math and science up-sampled", fim=0.5),
        *stage("mid_repo_code", ("repo", "events"), mid, "best_fit",
               src("repo", 1.0, format="jsonl" if sets.get("repo", "").endswith(".jsonl") else "repo", filter=False)
               + src("events", 1.0, format="events", filter=False, dedup="exact") + src("web", 0.1),
               "mid-training: repo-level code and issues/PRs/commits, longer sequences", fim=0.5),
        *stage("mid_reasoning", ("reasoning", "math"), mid, "best_fit",
               src("reasoning", 1.0) + src("math", 1.0) + src("web", 0.1),
               "mid-training: synthetic reasoning data"),
        *stage("mid_long_agent", ("agent", "long"), long, "best_fit",
               src("agent", 1.0) + src("long", 2.0) + src("web", 1.0, min_chars=4 * mid) + src("reasoning", 0.2),
               "mid-training: long documents up-sampled, agent trajectories, longest sequences"),
    ]
    if not stages:
        raise DataError(f"no preset stage can be built from the document sets {sorted(sets)}")
    return stages


# ---- building -----------------------------------------------------------------------------------

def shuffled(items: Iterable[Document], buffer_size: int, rng: np.random.Generator) -> Iterator[Document]:
    """A seeded streaming shuffle: a random element of a `buffer_size` window comes out per step."""
    buf: list[Document] = []
    for item in items:
        if len(buf) < buffer_size:
            buf.append(item)
            continue
        j = int(rng.integers(len(buf)))
        buf[j], item = item, buf[j]
        yield item
    order = rng.permutation(len(buf))
    for j in order:
        yield buf[j]


def _read(src: SourceSpec) -> Iterator[Document]:
    if src.format == "repo":
        return repo_documents(read_code_tree(src.path, source=src.name))
    if src.format == "events":
        return event_documents(read_events(src.path))
    return read_source(src.path, src.format, text_field=src.text_field)


def source_documents(src: SourceSpec, stage: StageSpec, report: dict[str, Any], *,
                     embedder: Callable | None = None, progress: bool = False) -> Iterator[Document]:
    """One source's documents after every per-source step; counts go into `report`."""
    rng = np.random.default_rng([stage.seed, zlib.crc32(src.name.encode())])
    counts: dict[str, Any] = {}
    report[src.name] = counts

    def counted(it: Iterable[Document], key: str) -> Iterator[Document]:
        counts[key] = 0  # set now, so the report lists steps in pipeline order

        def gen() -> Iterator[Document]:
            for d in it:
                counts[key] += 1
                yield d
        return gen()

    docs: Iterator[Document] = _read(src)
    if src.max_docs is not None:
        docs = itertools.islice(docs, src.max_docs)
    if progress:
        from tqdm import tqdm

        docs = iter(tqdm(docs, desc=f"{stage.name}/{src.name}", unit="doc", leave=False))
    docs = counted(docs, "read")
    if src.min_chars:
        docs = counted((d for d in docs if d.num_chars >= src.min_chars), "long_enough")
    if src.filter:
        text_cfg, code_cfg = filter_configs(src.text_filter, src.code_filter)
        filt = DocumentFilter(text=text_cfg, code=code_cfg)
        docs = counted(filt.apply(docs), "filtered")
        counts["filter_rejections"] = filt.stats.rejected
    level = DEDUP_LEVELS.index(src.dedup)
    if level >= 1:
        docs = counted(ExactDedup().apply(docs), "exact_dedup")
    if level >= 2:
        docs = counted(MinHashDedup(threshold=src.minhash_threshold).apply(docs), "minhash_dedup")
    if level >= 3:
        docs = counted(SemDedup(embedder=embedder, eps=src.semdedup_eps, seed=stage.seed).apply(docs), "semdedup")
    if src.quality_model:
        sampler = QualitySampler(QualityClassifier.load(src.quality_model), weights=tuple(src.bucket_weights),
                                 seed=stage.seed)
        docs = counted(sampler.apply(docs), "after_quality_buckets")
        counts["quality"] = sampler.summary()

    def weighted(it: Iterable[Document]) -> Iterator[Document]:
        for d in it:
            for _ in range(repetitions(src.weight, rng)):
                yield d

    docs = counted(weighted(docs), "after_weight")
    if stage.fim_rate > 0:
        fim = FimTransform(rate=stage.fim_rate, spm_rate=stage.fim_spm_rate, seed=stage.seed)
        docs = fim.apply(docs)
        counts["fim"] = fim.counts
    return docs


def build_stage(stage: StageSpec, tokenizer: Any, out_dir: str | Path, *, embedder: Callable | None = None,
                progress: bool = False) -> dict[str, Any]:
    """Run a stage spec end to end into a shard directory; returns (and writes) its summary."""
    t0 = time.time()
    out = Path(out_dir)
    report: dict[str, Any] = {}
    rng = np.random.default_rng(stage.seed)
    streams = (d for s in stage.sources for d in source_documents(s, stage, report, embedder=embedder,
                                                                   progress=progress))
    doc_tok = DocumentTokenizer(tokenizer, chat_loss=stage.chat_loss, enable_thinking=stage.enable_thinking)
    pad_id = doc_tok.eos_id
    packer = Packer(stage.packing, stage.seq_len, pad_id=pad_id)
    vocab_size = int(doc_tok.tokenizer.vocab_size)
    writer = ShardWriter(out, mode=stage.packing, seq_len=stage.seq_len, vocab_size=vocab_size, pad_id=pad_id,
                         rows_per_shard=stage.rows_per_shard, meta={"stage": stage.to_dict()})
    for row in packer.pack(doc_tok.apply(shuffled(streams, stage.shuffle_buffer, rng))):
        writer.add(row)
    summary = {
        "stage": stage.name, "seq_len": stage.seq_len, "packing": stage.packing, "sources": report,
        "tokens_by_source": dict(doc_tok.tokens_by_source), "documents": doc_tok.docs, "tokens": doc_tok.tokens,
        "packing_stats": packer.stats.as_dict(), "seconds": round(time.time() - t0, 2),
    }
    summary = json.loads(json.dumps(summary, default=_jsonable))
    index = writer.close(stats=summary)
    summary["rows"] = index["num_rows"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, dict):
        return dict(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
