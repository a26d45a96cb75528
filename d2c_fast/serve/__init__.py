"""``d2c-fast serve``: an HTTP API with dynamic batching and a web editor over one model.

* :mod:`.batcher`: groups concurrent requests of one kind into one engine call (no web
  framework);
* :mod:`.service`: the model, its attributes, request checks and the batched engine calls
  (no web framework);
* :mod:`.metrics`: Prometheus text;
* :mod:`.app`: the FastAPI app and the uvicorn server; ``static/``: the page at ``/``.

An application layer (as demo, train, eval): imported only by the CLI.
"""
from .app import check_bind, create_app, is_loopback, run_server
from .batcher import Batcher, QueueFull, engine_thread
from .metrics import Metrics
from .service import Limits, RequestError, Service

__all__ = ["create_app", "check_bind", "is_loopback", "run_server", "Batcher", "QueueFull",
           "engine_thread", "Metrics", "Limits", "RequestError", "Service"]
