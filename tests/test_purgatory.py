"""Purgatory: completion by event, by timeout, exactly once, no leaks."""

from __future__ import annotations

import asyncio

from pystream.purgatory import DelayedOperation, Purgatory


def test_completes_on_event_not_timer() -> None:
    async def main() -> None:
        purgatory = Purgatory("fetch")
        state = {"bytes": 0}
        op = DelayedOperation(
            lambda: state["bytes"] if state["bytes"] >= 100 else None,
            lambda: -1,
            keys=[("t", 0)],
        )
        waiter = asyncio.create_task(purgatory.wait(op, timeout_ms=60_000))
        await asyncio.sleep(0)  # let it register
        assert len(purgatory) == 1
        state["bytes"] = 50
        assert purgatory.check_and_complete(("t", 0)) == 0
        state["bytes"] = 150
        assert purgatory.check_and_complete(("t", 1)) == 0  # other key: not woken
        assert purgatory.check_and_complete(("t", 0)) == 1
        assert await asyncio.wait_for(waiter, 5) == 150
        assert len(purgatory) == 0

    asyncio.run(main())


def test_expires_with_on_expire_result() -> None:
    async def main() -> None:
        purgatory = Purgatory("fetch")
        op = DelayedOperation(lambda: None, lambda: "expired", keys=[("t", 0), ("t", 1)])
        assert await asyncio.wait_for(purgatory.wait(op, timeout_ms=10), 5) == "expired"
        assert len(purgatory) == 0
        assert purgatory.check_and_complete(("t", 0)) == 0

    asyncio.run(main())


def test_immediate_completion_and_zero_timeout() -> None:
    async def main() -> None:
        purgatory = Purgatory("fetch")
        ready = DelayedOperation(lambda: "now", lambda: "late", keys=[1])
        assert await purgatory.wait(ready, timeout_ms=1000) == "now"
        not_ready = DelayedOperation(lambda: None, lambda: "late", keys=[1])
        assert await purgatory.wait(not_ready, timeout_ms=0) == "late"
        assert len(purgatory) == 0

    asyncio.run(main())


def test_operation_on_several_keys_completes_once() -> None:
    async def main() -> None:
        purgatory = Purgatory("produce")
        calls = []

        def try_complete() -> str | None:
            calls.append(1)
            return "done" if len(calls) >= 2 else None

        op = DelayedOperation(try_complete, lambda: "expired", keys=["a", "b"])
        waiter = asyncio.create_task(purgatory.wait(op, timeout_ms=60_000))
        await asyncio.sleep(0)
        assert purgatory.check_and_complete("a") == 1
        assert await waiter == "done"
        # Already completed and unwatched: a later event on the other key does nothing.
        assert purgatory.check_and_complete("b") == 0
        assert len(calls) == 2

    asyncio.run(main())


def test_cancelled_waiter_is_unwatched() -> None:
    async def main() -> None:
        purgatory = Purgatory("fetch")
        op = DelayedOperation(lambda: None, lambda: None, keys=["k"])
        waiter = asyncio.create_task(purgatory.wait(op, timeout_ms=60_000))
        await asyncio.sleep(0)
        assert len(purgatory) == 1
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert len(purgatory) == 0

    asyncio.run(main())
