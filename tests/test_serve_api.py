"""``d2c-fast serve``: the API in-process (httpx over ASGI, the app's lifespan run by the test)
and against a real server process on a loopback port; batching equals direct calls;
bad input; the queue limit; a client leaving mid-batch; token, host and CORS rules; fitting.

Equality: a request computed alone is compared bitwise (PNG pixels) with the direct Sampler
call; a request computed in a batch with others within one 8-bit level on at most 0.2% of
values (see ``serve_helpers.assert_close_uint8`` for why).
"""
from __future__ import annotations

import asyncio
import base64
import io
import os
import struct
import threading
import zlib

import httpx
import numpy as np
import pytest
import torch

from d2c_fast.attributes import builtin_attribute_names
from d2c_fast.cli import main as cli_main
from d2c_fast.data.faces import FacesDataset
from d2c_fast.images import to_pil
from d2c_fast.sampler import Sampler
from d2c_fast.serve import Limits, Service, check_bind, create_app, engine_thread
from d2c_fast.serve import app as app_module

from serve_helpers import Server, assert_close_uint8, face_png, pixels, png_tensor, uint8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here, as the server processes get (--threads 1): the test process and
    a server share two cores, and OpenMP threads that outnumber the free cores spin-wait (an
    edit 30x slower, measured on this 2-core host)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sampler():
    return Sampler("builtin")


@pytest.fixture(scope="module")
def service(sampler):
    svc, skipped = Service.open(sampler, None, builtin=True)
    assert skipped == []
    return svc


def run_app(app, fn):
    """``await fn(client)`` with the app's lifespan running (batcher started, then stopped)."""
    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await fn(c)
    return asyncio.run(go())


def edit_form(i=0, attr="smiling", seed=0, **kw):
    data = {"attr": attr, "seed": str(seed), **{k: str(v) for k, v in kw.items()}}
    if "strength" not in kw and "target" not in kw:
        data["strength"] = "3"
    return {"files": {"image": ("face.png", face_png(i), "image/png")}, "data": data}


def direct_edit(sampler, service, i, attr="smiling", seed=0, **kw):
    kw.setdefault("strength", 3.0) if "target" not in kw else None
    out = sampler.manipulate(png_tensor(face_png(i)), service.attributes[attr], seed=seed, **kw)
    return uint8(out)[0]


# --------------------------------------------------------------------------- in-process
def test_health_model_and_page(service):
    app = create_app(service)

    async def go(c):
        return [await c.get(p) for p in ("/healthz", "/v1/model", "/", "/static/app.js",
                                         "/v1/faces", "/openapi.json")]
    health, model, page, js, faces, spec = run_app(app, go)
    assert health.status_code == 200
    m = model.json()
    assert m["resolution"] == 32
    names = builtin_attribute_names()
    assert len(names) == 5 and set(names) <= set(m["attributes"])
    assert all(m["attribute_info"][n]["builtin"] for n in names)
    assert page.status_code == 200 and "<script src=\"/static/app.js\">" in page.text
    assert js.status_code == 200 and "AbortController" in js.text
    assert len(faces.json()["images"]) == 8
    assert pixels(faces.json()["images"][0]).shape == (32, 32, 3)
    assert {"/v1/edit", "/v1/sample", "/v1/model", "/healthz"} <= set(spec.json()["paths"])


def test_edit_alone_equals_direct_call(sampler, service):
    app = create_app(service)

    async def go(c):
        r1 = await c.post("/v1/edit", **edit_form(1, "smiling", seed=5, strength=4))
        r2 = await c.post("/v1/edit", json={
            "image": base64.b64encode(face_png(2)).decode(), "attr": "beard",
            "target": "typical", "seed": 9, "method": "d2c"},
            headers={"Accept": "application/json"})
        r3 = await c.post("/v1/edit", **edit_form(3, ["blond_hair", "eyeglasses"], seed=2,
                                                  method="nvae", mode="mode"))
        r4 = await c.post("/v1/edit", json={    # no amount: the library's default edit
            "image": base64.b64encode(face_png(4)).decode(), "attr": "blond_hair", "seed": 1})
        r5 = await c.post("/v1/edit", json={    # a raw step: the official d2c edit
            "image": base64.b64encode(face_png(5)).decode(), "attr": "beard", "step": -4})
        return r1, r2, r3, r4, r5
    r1, r2, r3, r4, r5 = run_app(app, go)
    assert r1.status_code == 200 and r1.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(pixels(r1.content),
                                  direct_edit(sampler, service, 1, seed=5, strength=4.0))
    assert r2.status_code == 200 and r2.headers["content-type"] == "application/json"
    np.testing.assert_array_equal(pixels(r2.json()["image"]),
                                  direct_edit(sampler, service, 2, "beard", 9, target="typical",
                                              method="d2c"))
    assert r3.status_code == 200, r3.text
    want = uint8(sampler.manipulate(png_tensor(face_png(3)),
                                    [service.attributes["blond_hair"],
                                     service.attributes["eyeglasses"]],
                                    strength=3.0, seed=2, method="nvae", mode="mode"))[0]
    np.testing.assert_array_equal(pixels(r3.content), want)
    beard, blond = service.attributes["beard"], service.attributes["blond_hair"]
    np.testing.assert_array_equal(
        pixels(r4.content), uint8(sampler.manipulate(png_tensor(face_png(4)), blond, seed=1))[0])
    np.testing.assert_array_equal(
        pixels(r5.content),
        uint8(sampler.manipulate(png_tensor(face_png(5)), beard, step=-4.0, seed=0))[0])


def test_concurrent_edits_share_one_batch(sampler, service):
    """8 concurrent edits of one kind (max-wait long enough to gather them): one engine call
    of 8 images, each answer the direct call's for its own face and seed."""
    app = create_app(service, max_batch=8, max_wait_ms=2000)
    seeds = [11, 3, 7, 100, 0, 42, 5, 8]

    async def go(c):
        return await asyncio.gather(*[c.post("/v1/edit", **edit_form(i, seed=s))
                                      for i, s in enumerate(seeds)])
    rs = run_app(app, go)
    for i, (r, s) in enumerate(zip(rs, seeds)):
        assert r.status_code == 200, r.text
        assert_close_uint8(pixels(r.content), direct_edit(sampler, service, i, seed=s),
                           f"request {i}")
    m = app.state.metrics
    assert m.batch_images.count == 1 and m.batch_images.sum == 8


def test_samples_batched_equal_direct_calls(sampler, service):
    app = create_app(Service(sampler, service.attributes, limits=Limits(max_draws=64)),
                     max_batch=16, max_wait_ms=2000)
    reqs = [(2, 7), (1, 0), (1, 123)]

    async def go(c):
        rs = await asyncio.gather(*[c.post("/v1/sample", json={"n": n, "seed": s})
                                    for n, s in reqs])
        return rs, await c.post("/v1/sample", json={"n": 1, "seed": 3, "attr": "smiling"})
    rs, cond = run_app(app, go)
    assert app.state.metrics.batch_images.count == 2     # one call for the three, one for cond
    for r, (n, s) in zip(rs, reqs):
        got = np.stack([pixels(b) for b in r.json()["images"]])
        assert_close_uint8(got, uint8(sampler.sample(n, seed=s)), f"sample seed {s}")
    # conditional: the library's default rule (threshold 0.9), alone in its engine call
    want, probs = sampler.sample_conditional([service.attributes["smiling"]], 1, seed=3,
                                             max_draws=64, return_probs=True)
    assert cond.status_code == 200, cond.text
    np.testing.assert_array_equal(pixels(cond.json()["images"][0]), uint8(want)[0])
    assert cond.json()["probs"] == [[float(probs[0, 0])]] and probs[0, 0] >= 0.9


def _png_header(w, h):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


BAD_EDITS = [
    ({"attr": "nope", "strength": "1"}, 404, "unknown attribute 'nope'"),
    ({"attr": "smiling", "strength": "nan"}, 400, "strength must be a finite number"),
    ({"attr": "smiling", "strength": "inf"}, 400, "strength must be a finite number"),
    ({"attr": "smiling", "strength": "1e9"}, 400, "in [-100, 100]"),
    ({"attr": "smiling", "strength": "lots"}, 400, "strength must be a number"),
    ({"attr": "smiling", "target": "atypical"}, 400, "target must be a number or typical"),
    ({"attr": "smiling", "strength": "1", "target": "2"}, 400, "not strength and target"),
    ({"attr": "smiling", "step": "x"}, 400, "step must be a number"),
    ({"strength": "1"}, 400, "attr is required"),
    ({"attr": "smiling", "strength": "1", "seed": "-1"}, 400, "seed must be an integer"),
    ({"attr": "smiling", "strength": "1", "seed": "1.5"}, 400, "seed must be an integer"),
    ({"attr": "smiling", "strength": "1", "method": "magic"}, 400, "method must be one of"),
    ({"attr": "smiling", "strength": "1", "mode": "x"}, 400, "mode must be one of"),
    ({"attr": "smiling", "strength": "1", "colour": "red"}, 400, "unknown field 'colour'"),
]


@pytest.mark.parametrize("data,status,msg", BAD_EDITS)
def test_bad_edit_fields(service, data, status, msg):
    app = create_app(service)
    r = run_app(app, lambda c: c.post("/v1/edit", data=data, files={
        "image": ("f.png", face_png(0), "image/png")}))
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert msg in err and "\n" not in err


def test_bad_images_and_bodies(service):
    limits = Limits(max_body_bytes=300_000, max_pixels=256 * 256)
    app = create_app(Service(service.sampler, service.attributes, limits=limits))
    fields = {"attr": "smiling", "strength": "1"}

    def post(image, **kw):
        return lambda c: c.post("/v1/edit", data=fields, files={"image": ("x", image)}, **kw)
    big_pixels = run_app(app, post(_png_header(5000, 5000)))
    bomb = run_app(app, post(_png_header(100_000, 100_000)))
    not_image = run_app(app, post(b"GIF89a? no"))
    big_body = run_app(app, post(os.urandom(400_000)))

    async def chunked(c):   # no Content-Length: the cap counts the streamed bytes
        async def gen():
            for _ in range(40):
                yield b"x" * 10_000
        return await c.post("/v1/edit", content=gen(),
                            headers={"content-type": "application/json"})
    streamed = run_app(app, chunked)
    wrong_size = run_app(app, post(face_png(0, resolution=48)))
    resized = run_app(app, lambda c: c.post("/v1/edit", data={**fields, "resize": "true"},
                                            files={"image": ("x", face_png(0, 48))}))
    text = run_app(app, lambda c: c.post("/v1/edit", content=b"hi",
                                         headers={"content-type": "text/plain"}))
    bad_json = run_app(app, lambda c: c.post("/v1/edit", content=b"{nope",
                                             headers={"content-type": "application/json"}))
    bad_b64 = run_app(app, lambda c: c.post("/v1/edit", json={**fields, "image": "%%%"}))
    assert big_pixels.status_code == 413 and "5000x5000" in big_pixels.json()["error"]
    assert bomb.status_code == 413 and "decompression bomb" in bomb.json()["error"]
    assert not_image.status_code == 415 and "not an image" in not_image.json()["error"]
    assert big_body.status_code == 413 and streamed.status_code == 413
    assert wrong_size.status_code == 400 and "resize=true" in wrong_size.json()["error"]
    assert resized.status_code == 200
    assert text.status_code == 415 and bad_json.status_code == 400
    assert bad_b64.status_code == 400 and "base64" in bad_b64.json()["error"]


def test_bad_samples_and_library_messages(sampler, service):
    """Wrong n / seed / fields are 4xx; an error raised by the library reaches the client with
    the library's own one-line message (what the CLI prints after 'd2c-fast: error:')."""
    app = create_app(Service(sampler, service.attributes,
                             limits=Limits(max_draws=8)))
    cases = [({"n": 1000}, "n must be an integer in [1, 16]"),
             ({"n": 0}, "n must be an integer"), ({"n": True}, "n must be an integer"),
             ({"n": 2, "seed": "x"}, "seed must be an integer"),
             ({"n": 2, "threshold": 0.5}, "threshold applies to conditional"),
             ({"n": 2, "attr": "nope"}, "unknown attribute"),
             ({"n": 1, "attr": "smiling", "threshold": 2}, "threshold (a probability, or 'paper')"),
             ({"n": 1, "attr": "smiling", "threshold": "most"}, "threshold (a probability")]

    async def go(c):
        out = [await c.post("/v1/sample", json=body) for body, _ in cases]
        out.append(await c.post("/v1/sample", json={"n": 2, "seed": 0, "attr": "eyeglasses",
                                                     "threshold": 1.0}))
        return out
    rs = run_app(app, go)
    for r, (_, msg) in zip(rs, cases):
        assert 400 <= r.status_code < 500 and msg in r.json()["error"], (msg, r.text)
    with pytest.raises(ValueError) as e:
        sampler.sample_conditional([service.attributes["eyeglasses"]], 2, seed=0,
                                   threshold=1.0, max_draws=8, return_probs=True)
    assert rs[-1].status_code == 400 and rs[-1].json()["error"] == str(e.value)


def test_queue_limit_503_and_client_leaving_mid_batch(sampler, service):
    """The engine is held busy: requests queue up to --queue, the next ones get 503 with
    Retry-After at once; a client that leaves while its batch is waiting for the engine does
    not disturb the others of that batch."""
    svc = Service(sampler, service.attributes)
    gate, run_edits = threading.Event(), svc.run_edits
    svc.run_edits = lambda key, ps: gate.wait(60) and run_edits(key, ps)   # a slow engine
    app = create_app(svc, max_batch=8, max_wait_ms=500, queue=3)

    async def go(c):
        batcher = app.state.batcher
        first = [asyncio.ensure_future(c.post("/v1/edit", **edit_form(i, seed=i)))
                 for i in range(3)]
        while batcher.running != 3:            # their batch is in the engine
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(c.post("/v1/edit", **edit_form(i, seed=i, strength=5)))
                  for i in range(3)]
        while batcher.depth < 3:
            await asyncio.sleep(0.01)
        over = [await c.post("/v1/edit", **edit_form(0)) for _ in range(12)]
        first[1].cancel()                      # its client leaves mid-batch
        await asyncio.sleep(0.05)
        gate.set()
        done = await asyncio.gather(*first, return_exceptions=True)
        return done, await asyncio.gather(*queued), over
    done, queued, over = run_app(app, go)
    assert all(r.status_code == 503 and r.headers["retry-after"] == "1" for r in over)
    assert "busy" in over[0].json()["error"]
    assert isinstance(done[1], asyncio.CancelledError)
    for i in (0, 2):
        assert_close_uint8(pixels(done[i].content), direct_edit(sampler, service, i, seed=i))
    for i, r in enumerate(queued):
        assert_close_uint8(pixels(r.content),
                           direct_edit(sampler, service, i, seed=i, strength=5.0))
    m = app.state.metrics
    assert m.requests == {("/v1/edit", 200): 5, ("/v1/edit", 503): 12, ("/v1/edit", 499): 1}
    assert m.batch_images.sum == 6     # the left request was computed with its batch


def test_torch_runs_in_the_engine_thread_only(sampler, service):
    """Batches, and the making of the input tensors, run in the engine thread the model was
    loaded with; reading uploads and writing PNGs (PIL) in the I/O threads (torch work from
    two threads slows both: d2c_fast.serve.batcher)."""
    from PIL import Image
    engine = engine_thread()
    svc = Service(sampler, service.attributes)
    seen = []

    def spy(name, fn):
        def wrapped(*a, **k):
            seen.append((name, threading.current_thread().name))
            return fn(*a, **k)
        return wrapped
    for name in ("read_image", "image_tensor", "run_edits", "run_samples", "faces"):
        setattr(svc, name, spy(name, getattr(svc, name)))
    app_module.png_bytes, png = spy("png", app_module.png_bytes), app_module.png_bytes
    buf = io.BytesIO()
    Image.open(io.BytesIO(face_png(1))).resize((128, 128)).save(buf, format="PNG")
    app = create_app(svc, engine=engine)

    async def go(c):
        return [await c.post("/v1/edit", **edit_form(0)),
                await c.post("/v1/edit", files={"image": ("big.png", buf.getvalue())},
                             data={"attr": "smiling", "strength": "3", "resize": "true"}),
                await c.post("/v1/sample", json={"n": 2, "seed": 0}),
                await c.get("/v1/faces")]
    try:
        rs = run_app(app, go)
        name = engine.submit(lambda: threading.current_thread().name).result()
    finally:
        engine.shutdown()
        app_module.png_bytes = png
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
    assert name.startswith("d2c-engine")
    torch_work = {"image_tensor", "run_edits", "run_samples", "faces"}
    assert {w for w, _ in seen} == torch_work | {"read_image", "png"}
    for what, thread in seen:
        assert (thread == name) == (what in torch_work), (what, thread)


def test_token_cors_and_host_rule(service, capsys):
    app = create_app(service, token="s3cret-token", cors="https://example.org")

    async def go(c):
        return [await c.get("/v1/model"),
                await c.get("/v1/model", headers={"Authorization": "Bearer wrong-token"}),
                await c.get("/v1/model", headers={"Authorization": "Bearer s3cret-token"}),
                await c.get("/healthz"), await c.get("/"),
                await c.get("/metrics"),
                await c.options("/v1/edit", headers={
                    "Origin": "https://example.org", "Access-Control-Request-Method": "POST"}),
                await c.options("/v1/edit", headers={
                    "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})]
    none, wrong, ok, health, page, metrics, pre_ok, pre_bad = run_app(app, go)
    assert none.status_code == 401 and wrong.status_code == 401 and metrics.status_code == 401
    assert none.headers["www-authenticate"] == "Bearer" and "token" in none.json()["error"]
    assert ok.status_code == 200 and health.status_code == 200 and page.status_code == 200
    assert pre_ok.headers.get("access-control-allow-origin") == "https://example.org"
    assert "access-control-allow-origin" not in pre_bad.headers
    plain = create_app(service)
    r = run_app(plain, lambda c: c.get("/v1/model", headers={"Origin": "https://example.org"}))
    assert "access-control-allow-origin" not in r.headers       # no CORS unless asked

    check_bind("127.0.0.1", None, False)
    check_bind("::1", None, False)
    check_bind("localhost", None, False)
    check_bind("0.0.0.0", "long-enough", False)
    check_bind("0.0.0.0", None, True)
    with pytest.raises(ValueError, match="--token"):
        check_bind("0.0.0.0", None, False)
    with pytest.raises(ValueError, match="at least 8"):
        check_bind("127.0.0.1", "short", False)
    assert cli_main(["serve", "builtin", "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("d2c-fast: error: --host 0.0.0.0") and "--insecure" in err
    assert err.count("\n") == 0


def test_fit_attribute_stored_atomically(sampler, service, tmp_path):
    adir = tmp_path / "attrs"
    svc = Service(sampler, service.attributes, attr_dir=str(adir), fixed=service.fixed)
    app = create_app(svc)
    ds = FacesDataset(120, resolution=32, seed=0, split="val")
    lab = ds.all_labels()[:, 4]
    pos = [face for face, y in ((ds[j][0], lab[j]) for j in range(120)) if y > 0.5][:8]
    neg = [face for face, y in ((ds[j][0], lab[j]) for j in range(120)) if y < 0.5][:8]

    def files(name):
        return ([("positive", (f"p{i}.png", png_of(x))) for i, x in enumerate(pos)]
                + [("negative", (f"n{i}.png", png_of(x))) for i, x in enumerate(neg)],
                {"name": name})

    async def go(c):
        out = {}
        for name in ("../evil", ".hidden", "smiling", "a/b", "my_smile"):
            f, d = files(name)
            out[name] = await c.post("/v1/attributes", files=f, data=d)
        out["model"] = await c.get("/v1/model")
        out["edit"] = await c.post("/v1/edit", **edit_form(0, "my_smile", strength=1))
        return out
    r = run_app(app, go)
    for bad in ("../evil", ".hidden", "a/b"):
        assert r[bad].status_code == 400 and "name must be" in r[bad].json()["error"]
    assert r["smiling"].status_code == 409
    assert r["my_smile"].status_code == 200, r["my_smile"].text
    assert r["my_smile"].json()["name"] == "my_smile"
    assert sorted(os.listdir(adir)) == ["my_smile.safetensors"]      # no temp file left
    assert not (tmp_path / "evil.safetensors").exists()
    assert "my_smile" in r["model"].json()["attributes"]
    assert r["edit"].status_code == 200
    # a new server over the folder serves it from the start
    again, skipped = Service.open(sampler, str(adir), builtin=True)
    assert "my_smile" in again.attributes and skipped == []
    off = create_app(Service(sampler, service.attributes))
    f, d = files("x1")
    assert run_app(off, lambda c: c.post("/v1/attributes", files=f, data=d)).status_code == 403


def png_of(x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    to_pil(x.unsqueeze(0))[0].save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- real server
def test_real_server_many_concurrent_clients(sampler, service):
    """`d2c-fast serve builtin` on a loopback port; 24 concurrent clients (edits and samples
    with different faces and seeds) each get exactly their own result, while 3 more hang up
    mid-request."""
    srv = Server("builtin", "--max-wait-ms", "50")
    try:
        jobs = [("edit", i % 8, 1000 + i) for i in range(20)] + \
               [("sample", 2, 500 + 10 * i) for i in range(4)] + \
               [("leave", i, 77) for i in range(3)]      # clients that hang up mid-request
        results = [None] * len(jobs)
        start = threading.Barrier(len(jobs))

        def client(k):
            kind, a, seed = jobs[k]
            with httpx.Client(base_url=srv.url, timeout=120) as c:
                start.wait()
                if kind == "edit":
                    results[k] = c.post("/v1/edit", **edit_form(a, seed=seed))
                elif kind == "leave":
                    try:
                        c.post("/v1/edit", **edit_form(a, seed=seed),
                               timeout=httpx.Timeout(5, read=0.01))
                    except httpx.ReadTimeout:
                        results[k] = "left"
                else:
                    results[k] = c.post("/v1/sample", json={"n": a, "seed": seed})
        threads = [threading.Thread(target=client, args=(k,)) for k in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        metrics = httpx.get(srv.url + "/metrics").text
        assert srv.alive()
    finally:
        srv.stop()
    for (kind, a, seed), r in zip(jobs, results):
        if kind == "leave":
            continue
        assert r is not None and r.status_code == 200, (kind, seed, r and r.text)
        if kind == "edit":
            assert_close_uint8(pixels(r.content), direct_edit(sampler, service, a, seed=seed),
                               f"edit face {a} seed {seed}")
        else:
            got = np.stack([pixels(b) for b in r.json()["images"]])
            assert_close_uint8(got, uint8(sampler.sample(a, seed=seed)), f"sample {seed}")
    lines = dict(l.rsplit(" ", 1) for l in metrics.splitlines() if not l.startswith("#"))
    assert 20 + 8 <= float(lines['d2c_serve_batch_images_sum']) <= 20 + 8 + 3
    assert float(lines['d2c_serve_batch_images_count']) < 24      # some requests shared a call
    assert float(lines['d2c_serve_requests_total{endpoint="/v1/edit",status="200"}']) >= 20
    assert "d2c_serve_queue_depth 0" in metrics
