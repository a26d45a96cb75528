"""The server's batcher alone (no web framework, no model): grouping by key up to max_batch,
a lone request not waiting for company, errors staying with their request, the queue limit,
a request abandoned before its batch starts being skipped."""
from __future__ import annotations

import asyncio
import threading

import pytest

from d2c_fast.serve import Batcher, QueueFull, engine_thread


def run(coro):
    return asyncio.run(coro)


async def hold_engine(b):
    """Occupy ``b``'s engine thread until the returned event is set, so that what is submitted
    next is queued before the consumer looks. Returns ``(gate, the holding request)``."""
    gate = threading.Event()
    hold = asyncio.ensure_future(b.submit("hold", lambda ps: [gate.wait(10)], None))
    while b.running == 0:
        await asyncio.sleep(0.001)
    return gate, hold


def test_groups_by_key_up_to_max_batch():
    calls = []

    def fn(payloads):
        calls.append(list(payloads))
        return [p * 10 for p in payloads]

    async def go():
        b = Batcher(max_batch=4, max_wait=5.0, max_queue=100)
        b.start()
        gate, hold = await hold_engine(b)
        futs = [asyncio.ensure_future(b.submit("a" if i % 3 else "b", fn, i)) for i in range(10)]
        await asyncio.sleep(0.01)
        gate.set()
        await hold
        out = await asyncio.gather(*futs)
        await b.stop()
        return out
    out = run(go())
    assert out == [i * 10 for i in range(10)]
    # key "a": 1 2 4 5 7 8 -> [1 2 4 5] [7 8]; key "b": 0 3 6 9 -> one call; oldest first
    assert calls == [[0, 3, 6, 9], [1, 2, 4, 5], [7, 8]]


def test_lone_request_does_not_wait_and_errors_stay_with_their_request():
    def fn(payloads):
        if any(p == "bad" for p in payloads):
            raise ValueError("bad payload")
        return [p.upper() for p in payloads]

    async def go():
        b = Batcher(max_batch=8, max_wait=30.0, max_queue=10)   # a wait nobody should see
        b.start()
        alone = await asyncio.wait_for(b.submit("k", fn, "x"), 10)
        gate, hold = await hold_engine(b)
        futs = [asyncio.ensure_future(b.submit("k", fn, p)) for p in ("a", "bad", "c")]
        await asyncio.sleep(0.01)
        gate.set()
        await hold
        res = await asyncio.gather(*futs, return_exceptions=True)
        await b.stop()
        return alone, res
    alone, res = run(go())
    assert alone == "X"
    assert res[0] == "A" and res[2] == "C"
    assert isinstance(res[1], ValueError) and str(res[1]) == "bad payload"


def test_queue_limit_and_abandoned_requests():
    seen = []

    def fn(payloads):
        seen.extend(payloads)
        return list(payloads)

    async def go():
        b = Batcher(max_batch=8, max_wait=0.0, max_queue=2)
        b.start()
        gate, hold = await hold_engine(b)
        f1 = asyncio.ensure_future(b.submit("k", fn, 1))
        f2 = asyncio.ensure_future(b.submit("k", fn, 2))
        await asyncio.sleep(0.01)
        assert b.depth == 2 and b.full()
        with pytest.raises(QueueFull) as e:
            await b.submit("k", fn, 3)
        assert e.value.retry_after == 1 and "busy" in str(e.value)
        f1.cancel()                     # its client left while it was still waiting
        await asyncio.sleep(0.01)
        gate.set()
        await hold
        assert await f2 == 2
        await b.stop()
    run(go())
    assert seen == [2]


def test_a_given_engine_runs_batches_and_calls_and_stays_with_its_owner():
    """The server loads its model with the engine thread and gives it to the batcher: batches
    and call() run in that one thread, and stop() leaves it to its owner."""
    engine = engine_thread()
    where = []

    def here(x):
        where.append(threading.current_thread().name)
        return x

    async def go():
        b = Batcher(max_batch=4, max_wait=0.0, max_queue=10, engine=engine)
        b.start()
        r = await b.submit("k", lambda ps: [here(p) * 2 for p in ps], 7)
        c = await b.call(here, "called")
        await b.stop()
        return r, c
    try:
        assert run(go()) == (14, "called")
        owner = engine.submit(here, None).result()   # still running after stop()
        assert owner is None and len(set(where)) == 1
        assert where[0].startswith("d2c-engine")
    finally:
        engine.shutdown()
