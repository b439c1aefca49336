"""`glm45 speedrun`: the whole GLM-4.5 system at toy scale, stage by stage, then a report card.

Each stage writes `<out>/<stage>/summary.json` when it finishes; a stage whose summary says
"done" is skipped on the next run, so an interrupted speedrun resumes where it stopped. A stage
whose capability is not in this build yet is recorded as "missing" (with the reason) and the
stages that need its output are skipped, so the pipeline always runs end to end.
"""

from __future__ import annotations

import json
import resource
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from glm45.pipeline.report import make_report


class StageUnavailable(RuntimeError):
    """This stage's capability is not in this build (the report lists it as missing)."""


@dataclass
class SpeedrunConfig:
    out: str = "runs/speedrun"
    preset: str = "nano"
    quick: bool = False
    seed: int = 0

    @property
    def corpus_chars(self) -> int:
        return 2_000_000 if self.quick else 30_000_000

    @property
    def seq_lens(self) -> tuple[int, int, int]:
        """Pre-training / mid-training / long-context sequence lengths (the paper's 4K/32K/128K, CPU-sized)."""
        return (128, 512, 1024) if self.quick else (256, 1024, 2048)

    @property
    def vocab_size(self) -> int:
        from glm45.config import ModelConfig

        return ModelConfig.preset(self.preset).vocab_size


@dataclass
class Stage:
    name: str
    run: Callable[[SpeedrunConfig, Path], dict[str, Any]]  # returns summary fields (metrics, tokens, …)
    needs: tuple[str, ...] = ()


def stage_corpus(cfg: SpeedrunConfig, out: Path) -> dict[str, Any]:
    from glm45.data.builtin import build_corpus

    result = build_corpus(out, budget_chars=cfg.corpus_chars, seed=cfg.seed)
    counts = result["counts"]
    return {"metrics": {f"docs_{k}": v["docs"] for k, v in counts.items()},
            "note": ", ".join(f"{k}: {v['chars'] / 1e6:.1f}M chars" for k, v in counts.items())}


def stage_tokenizer(cfg: SpeedrunConfig, out: Path) -> dict[str, Any]:
    from glm45.data.document import read_documents
    from glm45.tokenizer import train_tokenizer

    corpus = out.parent / "corpus"

    def texts():
        for path in sorted(corpus.glob("*.jsonl")):
            for doc in read_documents(path):
                yield doc.text if doc.text else json.dumps(doc.messages, ensure_ascii=False)

    tok = train_tokenizer(texts(), cfg.vocab_size)
    tok.save(out)
    sample = next(texts())[:20000]
    ids = tok.encode(sample)
    return {"metrics": {"vocab_size": tok.vocab_size, "chars_per_token": round(len(sample) / max(1, len(ids)), 3)}}


def stage_shards(cfg: SpeedrunConfig, out: Path) -> dict[str, Any]:
    """Tokenised, packed shards for every pre/mid-training stage (concat for pre-training,
    best-fit for mid-training)."""
    from glm45.data.stages import build_stage, load_stages, preset_stages
    from glm45.tokenizer import GLMTokenizer

    corpus = out.parent / "corpus"
    tokenizer = GLMTokenizer.from_pretrained(out.parent / "tokenizer")
    sets = {spec_src.name: spec_src.path for stage in load_stages(corpus / "stages.json") for spec_src in stage.sources}
    pre, mid, long = cfg.seq_lens
    metrics, tokens = {}, 0
    for spec in preset_stages(sets, seq_len=pre, mid_seq_len=mid, long_seq_len=long, seed=cfg.seed):
        summary = build_stage(spec, tokenizer, out / spec.name)
        metrics[f"tokens_{spec.name}"] = summary["tokens"]
        tokens += summary["tokens"]
    return {"tokens": tokens, "metrics": metrics}


STAGES: list[Stage] = [
    Stage("corpus", stage_corpus),
    Stage("tokenizer", stage_tokenizer, needs=("corpus",)),
    Stage("shards", stage_shards, needs=("tokenizer",)),
]


def _write_summary(stage_dir: Path, summary: dict[str, Any]) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = stage_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(stage_dir / "summary.json")


def _status(stage_dir: Path) -> str | None:
    try:
        return json.loads((stage_dir / "summary.json").read_text()).get("status")
    except (OSError, json.JSONDecodeError):
        return None


def run_speedrun(cfg: SpeedrunConfig, stages: list[Stage] | None = None, log=print) -> Path:
    stages = STAGES if stages is None else stages
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    (root / "speedrun.json").write_text(json.dumps(asdict(cfg), indent=2))
    for stage in stages:
        stage_dir = root / stage.name
        if _status(stage_dir) == "done":
            log(f"[{stage.name}] done already, skipped")
            continue
        blocked = [n for n in stage.needs if _status(root / n) != "done"]
        if blocked:
            _write_summary(stage_dir, {"stage": stage.name, "status": "skipped",
                                       "note": f"needs {', '.join(blocked)}"})
            log(f"[{stage.name}] skipped: needs {', '.join(blocked)}")
            continue
        log(f"[{stage.name}] running")
        t0 = time.perf_counter()
        stage_dir.mkdir(parents=True, exist_ok=True)
        try:
            fields = stage.run(cfg, stage_dir) or {}
            status = "done"
        except StageUnavailable as e:
            fields, status = {"note": f"not in this build yet: {e}"}, "missing"
        except Exception as e:  # one broken stage must not hide the others in the report
            (stage_dir / "error.txt").write_text(traceback.format_exc())
            fields, status = {"note": f"{type(e).__name__}: {e}"}, "failed"
        wall = time.perf_counter() - t0
        summary = {"stage": stage.name, "status": status, "wall_s": round(wall, 2),
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), **fields}
        if summary.get("tokens") and "tokens_per_s" not in summary:
            summary["tokens_per_s"] = round(summary["tokens"] / max(wall, 1e-9), 1)
        _write_summary(stage_dir, summary)
        log(f"[{stage.name}] {status} in {wall:.1f}s" + (f": {fields.get('note')}" if status != "done" else ""))
    report = make_report(root, [s.name for s in stages], title=f"glm45 speedrun ({cfg.preset}"
                         + (", quick)" if cfg.quick else ")"))
    return report
