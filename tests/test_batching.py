"""Micro-batching of app predictions: concurrent requests share predict calls; one bad request fails alone."""

from __future__ import annotations

import asyncio
import time

from luodi.serve.batching import MicroBatcher


def doubling(calls: list[int]):
    """A predict function that takes 20 ms per call (as a model would), whatever the batch size."""

    def predict(records):
        calls.append(len(records))
        time.sleep(0.02)
        if any(r.get("x") == "bad" for r in records):
            raise ValueError("x must be a number")
        return [{"y": 2 * r["x"]} for r in records]

    return predict


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    calls: list[int] = []
    b = MicroBatcher(doubling(calls), batch_size=8)

    async def main():
        return await asyncio.gather(*(b.predict([{"x": i}, {"x": -i}]) for i in range(20)))

    outs = asyncio.run(main())
    assert outs == [[{"y": 2 * i}, {"y": -2 * i}] for i in range(20)]  # each request its own rows, in order
    assert len(calls) < 20 and max(calls) <= 8 and sum(calls) == 40  # shared calls, never above batch_size


def test_a_bad_request_fails_alone():
    calls: list[int] = []
    b = MicroBatcher(doubling(calls), batch_size=32, max_wait_ms=50)

    async def main():
        return await asyncio.gather(*(b.predict([{"x": "bad" if i == 3 else i}]) for i in range(6)),
                                    return_exceptions=True)

    outs = asyncio.run(main())
    assert isinstance(outs[3], ValueError)
    assert [o for i, o in enumerate(outs) if i != 3] == [[{"y": 2 * i}] for i in (0, 1, 2, 4, 5)]


def test_batch_size_one_or_a_full_batch_runs_alone():
    calls: list[int] = []
    b = MicroBatcher(doubling(calls), batch_size=1)

    async def main():
        await asyncio.gather(*(b.predict([{"x": i}]) for i in range(4)))
        big = MicroBatcher(doubling(calls), batch_size=4)
        await big.predict([{"x": i} for i in range(5)])

    asyncio.run(main())
    assert calls == [1, 1, 1, 1, 5]

