"""`glm45 serve --model DIR`: the OpenAI-compatible HTTP server."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from glm45.cli import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory (config.json, weights, tokenizer.json)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: local only; 0.0.0.0 exposes the server)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("GLM45_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 routes (default: $GLM45_API_KEY, else none)")
    p.add_argument("--served-model-name", default=None,
                   help="the model name clients send (default: the checkpoint directory's name)")
    p.add_argument("--max-batch-size", type=int, default=16, help="requests decoded together (KV cache rows)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="prompt + completion tokens per request (default: the model's, at most 8192)")
    p.add_argument("--speculative", action="store_true", help="MTP speculative decoding (needs the MTP layer)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step (compiled at start-up, before serving)")
    p.add_argument("--default-thinking", choices=["on", "off"], default="on",
                   help="thinking mode when a request does not set chat_template_kwargs.enable_thinking")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="weights dtype (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default on CPU: one per core but one, left to the HTTP event loop; "
                        "OMP_NUM_THREADS, when set, is kept)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    import torch

    from glm45.runtime import default_device, shared_cpu_threads
    from glm45.serve.app import create_app
    from glm45.serve.backend import BackendError, EngineBackend, load_generation_defaults
    from glm45.serve.server import ForegroundServer, uvicorn_config
    from glm45.serve.service import ServeConfig

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not 0 < args.port < 65536:
        print(f"error: --port must lie in 1..65535, got {args.port}", file=sys.stderr)
        return 2
    device = args.device or str(default_device())
    threads = args.threads or shared_cpu_threads(torch.device(device).type, other_busy=1)  # the event loop
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        backend = EngineBackend.load(args.model, max_batch_size=args.max_batch_size, speculative=args.speculative,
                                     max_model_len=args.max_model_len, dtype=args.dtype, device=device,
                                     compile=args.compile)
    except (BackendError, ValueError, OSError) as e:
        print(f"error: cannot load {args.model}: {e}", file=sys.stderr)
        return 2
    name = args.served_model_name or os.path.basename(os.path.normpath(args.model))
    config = ServeConfig(served_model_name=name, api_key=args.api_key or None,
                         default_thinking=args.default_thinking == "on",
                         sampling_defaults=load_generation_defaults(args.model))
    app = create_app(backend, config)
    print(f"serving {name!r} from {args.model} on http://{args.host}:{args.port}/v1 "
          f"(batch {args.max_batch_size}, context {backend.max_model_len}, speculative {args.speculative}, "
          f"compiled {args.compile}, threads {torch.get_num_threads()}, "
          f"thinking {args.default_thinking}, api key {'on' if config.api_key else 'off'})", flush=True)
    server = ForegroundServer(uvicorn_config(app, args.host, args.port, args.log_level))
    server.run()
    if server.interrupted:  # uvicorn's re-raised Ctrl-C was lost (see ForegroundServer)
        raise KeyboardInterrupt
    return 0
