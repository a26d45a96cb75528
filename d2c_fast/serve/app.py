"""The HTTP API (FastAPI) over a :class:`~d2c_fast.serve.service.Service`, and the server
that runs it (uvicorn).

Endpoints (``/docs`` has the OpenAPI page):

* ``GET /healthz`` 200 when ready (no token needed); ``GET /metrics`` Prometheus text;
* ``GET /v1/model``: resolution, attributes (names) and their details, limits;
* ``GET /v1/faces``: a few built-in procedural test faces (base64 PNG);
* ``POST /v1/edit``: multipart (``image`` file, ``attr``, ``strength`` or ``target`` or
  ``step``, optional ``method``, ``mode``, ``seed``, ``resize``: ``Sampler.manipulate``'s
  arguments and defaults) or a JSON object with the same fields (``image`` base64) ->
  ``image/png``, or ``{"image": <base64 PNG>}`` with ``Accept: application/json``;
* ``POST /v1/sample``: JSON ``{"n", "seed", "mode"}`` -> ``{"images": [...]}``; with ``attr``
  (and ``threshold``) conditional samples, plus their ``probs``;
* ``POST /v1/attributes``: multipart ``name``, ``positive`` files, ``negative`` files: fit an
  attribute, store it under the attribute folder and serve it;
* ``GET /``: the web editor (``static/``).

Errors are JSON ``{"error": "<one line>"}``: 4xx for bad requests (the library's message, as
the CLI prints it), 401 without the token, 413 past the size caps, 503 + ``Retry-After`` when
the queue is full.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import itertools
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import D2CError
from .batcher import Batcher, QueueFull
from .metrics import Metrics
from .service import RequestError, Service, b64_png, png_bytes

__all__ = ["create_app", "check_bind", "is_loopback", "run_server", "STATIC_DIR"]

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
PUBLIC = ("/healthz",)   # answered without the token
PAGE = ("/", "/favicon.ico")   # the page itself holds nothing: its API calls carry the token
LOG = logging.getLogger("d2c_fast.serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, insecure: bool) -> None:
    """Any address but loopback needs a token (or an explicit ``insecure``)."""
    if token is not None and len(token) < 8:
        raise ValueError("--token must be at least 8 characters")
    if not is_loopback(host) and token is None and not insecure:
        raise ValueError(f"--host {host} is reachable from other machines: give --token T "
                         "(clients send 'Authorization: Bearer T') or --insecure to serve "
                         "without authentication")


def _error(status: int, msg: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(msg).split())[:500]}, status_code=status,
                        headers=headers)


class BodyTooLarge(Exception):
    pass


class _Guard:
    """ASGI middleware: bearer token, body size cap, metrics (status, latency)."""

    def __init__(self, app, *, token, max_body, metrics: Metrics, endpoints):
        self.app, self.token, self.max_body = app, token, max_body
        self.metrics, self.endpoints = metrics, endpoints

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t = time.perf_counter()
        path = scope["path"]
        endpoint = path if path in self.endpoints else (
            "/static" if path.startswith("/static/") else "other")
        status = [500]

        async def send_(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        async def answer(resp):
            await resp(scope, receive, send_)

        try:
            headers = dict(scope.get("headers") or [])
            if (self.token is not None and path not in PUBLIC + PAGE
                    and not path.startswith("/static/")):
                got = headers.get(b"authorization", b"").decode("latin-1")
                want = f"Bearer {self.token}"
                if not hmac.compare_digest(got.encode("utf-8", "replace"), want.encode()):
                    return await answer(_error(401, "missing or wrong token: send "
                                               "'Authorization: Bearer <token>'",
                                               {"WWW-Authenticate": "Bearer"}))
            cl = headers.get(b"content-length")
            if cl is not None:
                try:
                    n = int(cl)
                except ValueError:
                    return await answer(_error(400, "bad Content-Length header"))
                if n > self.max_body:
                    return await answer(_error(413, f"request body is {n} bytes, more than "
                                               f"the limit of {self.max_body}"))
            seen = [0]

            async def receive_():
                msg = await receive()
                if msg["type"] == "http.request":
                    seen[0] += len(msg.get("body", b""))
                    if seen[0] > self.max_body:
                        raise BodyTooLarge()
                return msg

            await self.app(scope, receive_, send_)
        except asyncio.CancelledError:
            status[0] = 499       # the client went away (nginx's code)
            raise
        finally:
            self.metrics.request(endpoint, status[0], time.perf_counter() - t)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


async def _fields(request: Request, lists=("attr", "strength", "target", "step", "positive",
                                           "negative")) -> dict:
    """The request's fields: multipart/urlencoded form (files as bytes) or a JSON object."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise RequestError("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError("send a JSON object")
        return body
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        out = {}
        async with request.form(max_files=1100, max_fields=100) as form:
            for k in form.keys():
                vals = []
                for v in form.getlist(k):
                    vals.append(await v.read() if isinstance(v, UploadFile) else v)
                many = k in ("positive", "negative") or (k in lists and len(vals) > 1)
                out[k] = vals if many else vals[0]
        return out
    raise RequestError(f"send multipart/form-data or application/json, got "
                       f"{ctype or 'no Content-Type'!r}", 415)


def create_app(service: Service, *, max_batch: int = 32, max_wait_ms: float = 5.0,
               queue: int = 256, token: str | None = None, cors: str | None = None,
               engine: ThreadPoolExecutor | None = None) -> FastAPI:
    """The FastAPI app serving ``service`` (see the module docstring). One batcher per app,
    started and stopped with it (use it as ``with TestClient(app)`` or under uvicorn).
    ``engine``: the thread that loaded the model (:func:`~d2c_fast.serve.batcher.engine_thread`),
    which then runs every torch op of the app (why: :mod:`d2c_fast.serve.batcher`)."""
    metrics = Metrics()
    batcher = Batcher(max_batch=max_batch, max_wait=max_wait_ms / 1000.0, max_queue=queue,
                      on_batch=lambda key, nr, ni, sec: metrics.batch(nr, ni, sec),
                      engine=engine)
    pools = {}   # the I/O threads, made per run of the app (lifespan)
    metrics.gauge("queue_depth", "Requests waiting for the engine.", lambda: batcher.depth)
    metrics.gauge("queue_limit", "Most requests that may wait (--queue).",
                  lambda: batcher.max_queue)
    metrics.gauge("running", "Requests in the engine call now running.",
                  lambda: batcher.running)
    metrics.gauge("attributes", "Attributes served.", lambda: len(service.attributes))
    unique = itertools.count()

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        pools["io"] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="d2c-io")
        try:
            yield
        finally:
            await batcher.stop()
            pools.pop("io").shutdown(wait=False)

    app = FastAPI(title="d2c-fast serve", version="1", lifespan=lifespan,
                  description="Edit, sample and fit attributes with one D2C model.")
    app.state.service, app.state.batcher, app.state.metrics = service, batcher, metrics

    async def io(fn, *args):
        """``fn(*args)`` in the I/O threads: reading uploads and writing PNGs with PIL, never
        torch (torch work runs in the engine thread only: :mod:`d2c_fast.serve.batcher`)."""
        return await asyncio.get_running_loop().run_in_executor(pools["io"], fn, *args)

    def admit():
        # requests being read count against the queue too: at most `queue` requests are
        # accepted and not yet computing, so memory stays bounded whatever the offered load
        if batcher.depth + batcher.arriving >= batcher.max_queue:
            raise QueueFull(batcher.depth + batcher.arriving)

    # ------------------------------------------------------------------ errors
    @app.exception_handler(RequestError)
    async def _request_error(request, e: RequestError):
        return _error(e.status, str(e))

    @app.exception_handler(QueueFull)
    async def _queue_full(request, e: QueueFull):
        return _error(503, str(e), {"Retry-After": str(e.retry_after)})

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request, e):
        return _error(413, f"request body is more than the limit of "
                      f"{service.limits.max_body_bytes} bytes")

    @app.exception_handler(D2CError)
    async def _d2c_error(request, e: D2CError):
        return _error(400, str(e))

    @app.exception_handler(ValueError)
    async def _value_error(request, e: ValueError):
        return _error(400, str(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):
        return _error(e.status_code, e.detail, getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, e: RequestValidationError):
        errs = e.errors()
        msg = "; ".join(f"{'.'.join(map(str, x.get('loc', ())))}: {x.get('msg')}"
                        for x in errs[:3]) or "invalid request"
        return _error(422, msg)

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        LOG.exception("internal error on %s", request.url.path)
        return _error(500, f"internal error ({type(e).__name__}); see the server log")

    # ------------------------------------------------------------------ routes
    @app.get("/healthz", summary="200 when the model is loaded and the batcher runs")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/model", summary="Resolution, attributes and limits")
    async def model():
        return service.model_info()

    @app.get("/v1/faces", summary="Built-in procedural test faces (base64 PNG)")
    async def faces():
        return {"images": await batcher.call(service.faces)}

    @app.post("/v1/edit", summary="Edit one image along attribute(s)",
              responses={200: {"content": {"image/png": {}}}})
    async def edit(request: Request):
        admit()
        with batcher.arrival():
            fields = await _fields(request)
            key, payload = await io(service.parse_edit, fields)
            del fields   # the upload's bytes are not kept while the request waits
        image = await batcher.submit(key, lambda ps: service.run_edits(key, ps), payload)
        png = await io(png_bytes, image)
        if _wants_json(request):
            return {"image": b64_png(png)}
        return Response(png, media_type="image/png")

    @app.post("/v1/sample", summary="Unconditional (or, with attr, conditional) samples")
    async def sample(request: Request):
        admit()
        with batcher.arrival():
            key, payload = service.parse_sample(await _fields(request))
        if payload is not None:
            images = await batcher.submit(key, lambda ps: service.run_samples(key[1], ps),
                                          payload, size=payload[0])
            return {"images": await io(lambda: [b64_png(png_bytes(x)) for x in images])}
        # conditional: identical requests share one call; others run alone
        return await batcher.submit(key, lambda ps: [service.run_conditional(key)] * len(ps),
                                    None, size=service.limits.max_n)

    @app.post("/v1/attributes", summary="Fit an attribute from labelled images and serve it")
    async def fit(request: Request):
        admit()
        with batcher.arrival():
            fields = await _fields(request)
            name = fields.get("name")
            service.check_fit_name(name)
            sets = []
            for k in ("positive", "negative"):
                files = fields.pop(k, None) or []
                files = files if isinstance(files, list) else [files]
                if not 2 <= len(files) <= service.limits.max_fit_images:
                    raise RequestError(f"{k}: give 2 to {service.limits.max_fit_images} image "
                                       f"files, got {len(files)}")
                sets.append(await io(lambda fs=files, k=k: [
                    service.read_image(f, f"{k}[{i}]", True) for i, f in enumerate(fs)]))
            del fields, files
        key = ("fit", next(unique))
        return await batcher.submit(key, lambda ps: [service.fit(name, *sets)], None,
                                    size=service.limits.max_n)

    @app.get("/metrics", summary="Prometheus text", response_class=PlainTextResponse)
    async def prom():
        return PlainTextResponse(metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(os.path.join(STATIC_DIR, "index.html"),
                            headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    endpoints = {r.path for r in app.routes if hasattr(r, "methods")}
    app.add_middleware(_Guard, token=token, max_body=service.limits.max_body_bytes,
                       metrics=metrics, endpoints=endpoints)
    if cors:   # outermost: preflight requests carry no token
        app.add_middleware(CORSMiddleware, allow_origins=[cors], allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Accept"])
    return app


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000,
               log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn (one process: the model is loaded once) until stopped."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1,
                timeout_graceful_shutdown=5)
