"""`glm45 params PRESET|CONFIG`: total and active parameters (Table 1 convention)."""

from __future__ import annotations

import argparse
import json
import os

from glm45.config import ConfigError, ModelConfig, PRESETS
from glm45.model.params import count_parameters


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=f"a preset ({', '.join(PRESETS)}), a config.json or a checkpoint directory")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = ModelConfig.from_hf(args.model) if os.path.exists(args.model) else ModelConfig.preset(args.model)
    except ConfigError as e:
        print(f"error: {e}")
        return 2
    n = count_parameters(cfg)
    if args.json:
        print(json.dumps(n))
    else:
        print(f"{args.model}: total {n['total'] / 1e9:.2f}B ({n['total']:,}), "
              f"active {n['active'] / 1e9:.2f}B ({n['active']:,})  [MTP included; embeddings and output layer excluded]")
    return 0
