"""The FastAPI application: routes, API-key check, OpenAI-format errors, request metrics.

Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models (all behind the API key
when one is set), GET /health and GET /metrics (open, for load balancers and Prometheus).
"""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from glm45.serve.backend import EngineBackend
from glm45.serve.errors import APIError, error_body
from glm45.serve.metrics import ServerMetrics
from glm45.serve.protocol import ModelCard, ModelList
from glm45.serve.service import OpenAIService, ServeConfig

log = logging.getLogger("glm45.serve")
KNOWN_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")


class MetricsMiddleware:
    """Counts every HTTP response by path and status (pure ASGI: streaming and disconnect
    handling pass through untouched, unlike BaseHTTPMiddleware)."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
            self.metrics.requests.inc(endpoint=path, status=str(status["code"]))


def create_app(backend: EngineBackend, config: ServeConfig) -> FastAPI:
    stats = backend.stats
    metrics = ServerMetrics(queue_depth=lambda: stats()["queue_depth"], running=lambda: stats()["running"])
    service = OpenAIService(backend, config, metrics)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await backend.start()
        try:
            yield
        finally:
            await backend.stop()

    app = FastAPI(title="glm45", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    async def check_key(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), config.api_key.encode()):
            what = "Missing API key" if not header else "Incorrect API key provided"
            raise APIError(f"{what}; send it as 'Authorization: Bearer <key>'", status=401,
                           code="invalid_api_key")

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), code=code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body(f"internal server error: {type(exc).__name__}: {exc}", type="server_error",
                                       code="internal_error"), status_code=500)

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat_completions(request: Request):
        return await service.chat(request)

    @app.post("/v1/completions", dependencies=[Depends(check_key)])
    async def completions(request: Request):
        return await service.completions(request)

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models():
        return ModelList(data=[ModelCard(id=config.served_model_name, created=created,
                                         max_model_len=backend.max_model_len)]).model_dump()

    @app.get("/health")
    async def health():
        if not backend.healthy():
            return JSONResponse({"status": "error", "detail": "the engine loop is not running"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
