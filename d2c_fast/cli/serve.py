"""``d2c-fast serve``: the HTTP API and the web editor over one model (d2c_fast.serve).

    d2c-fast serve builtin                                  # http://127.0.0.1:8000/
    d2c-fast serve model.safetensors --attr-dir attrs/ --host 0.0.0.0 --token "$TOKEN"
"""
from __future__ import annotations

import os
import sys

from ..errors import D2CError
from ..runtime import BUILTIN_PATH
from .options import add_model_args, check_counts, open_sampler


def cmd_serve(args) -> int:
    try:   # the serve extra is optional: every other command works without it
        from ..serve import Service, check_bind, create_app, engine_thread, run_server
    except ImportError as e:
        raise D2CError(f"d2c-fast serve needs the serve extra ({e.name or e}): pip install "
                       "'d2c_fast[serve]' (fastapi, uvicorn, python-multipart)") from None
    check_bind(args.host, args.token, args.insecure)
    check_counts(max_batch=args.max_batch, queue=args.queue)
    if not 0 <= args.max_wait_ms <= 10_000:
        raise ValueError(f"--max-wait-ms must be in [0, 10000], got {args.max_wait_ms}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if args.attr_dir and os.path.exists(args.attr_dir) and not os.path.isdir(args.attr_dir):
        raise ValueError(f"--attr-dir {args.attr_dir} is not a directory")
    engine = engine_thread()   # loads the model and then runs every torch op of the server
    s = engine.submit(open_sampler, args).result()
    builtin = args.ckpt == "builtin" or (os.path.exists(args.ckpt) and os.path.exists(BUILTIN_PATH)
                                         and os.path.samefile(args.ckpt, BUILTIN_PATH))
    service, skipped = engine.submit(Service.open, s, args.attr_dir, builtin=builtin).result()
    for line in skipped:
        print(f"d2c-fast: warning: --attr-dir: skipped {line}", file=sys.stderr)
    app = create_app(service, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                     queue=args.queue, token=args.token, cors=args.cors, engine=engine)
    names = ", ".join(sorted(service.attributes)) or "none"
    print(f"d2c-fast serve: {args.ckpt} (resolution {s.resolution}), attributes: {names}; "
          f"http://{args.host}:{args.port}/", flush=True)
    run_server(app, args.host, args.port, log_level=args.log_level)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="HTTP API with dynamic batching, and a web editor at /")
    add_model_args(p)
    p.add_argument("--attr-dir", help="folder of <name>.safetensors attributes to serve; "
                   "attributes fitted through the API are stored here")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; "
                   "any other needs --token or --insecure)")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument("--max-batch", type=int, default=32,
                   help="most images in one engine call (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a request may wait for others to share its batch")
    p.add_argument("--queue", type=int, default=256,
                   help="most requests accepted and not yet computing (being read or "
                   "waiting); more get 503 with Retry-After at once")
    p.add_argument("--token", default=os.environ.get("D2C_FAST_TOKEN") or None,
                   help="bearer token every endpoint but /healthz requires (default: "
                   "$D2C_FAST_TOKEN, which ps does not show; the page takes it as "
                   "http://HOST:PORT/#token=T)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without --token")
    p.add_argument("--cors", metavar="ORIGIN", help="allow cross-origin requests from ORIGIN "
                   "(default: none)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(fn=cmd_serve)
