"""The OpenAI-compatible server (`glm45 serve`).

Entry points: `glm45.serve.app.create_app(EngineBackend, ServeConfig)` builds the FastAPI app;
`glm45.serve.backend.EngineBackend.load(dir)` wraps the continuous-batching engine;
`glm45.serve.server.ServerThread(app)` runs it under uvicorn on a free local port. Kept import-free
so `glm45 serve --help` does not load torch.
"""
