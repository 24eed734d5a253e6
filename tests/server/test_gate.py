"""The generation gate: one at a time, a bounded queue, BusyError (429) beyond it."""

from __future__ import annotations

import asyncio

import pytest

from fmgguf.errors import BusyError, http_status_for
from fmgguf.server.gate import GenerationGate


def test_one_at_a_time_and_bounded_queue() -> None:
    async def main() -> None:
        gate = GenerationGate(max_queue=2)
        order: list[str] = []
        await gate.acquire("a")
        assert gate.busy

        async def waiter(name: str) -> None:
            await gate.acquire(name)
            order.append(name)
            await asyncio.sleep(0.01)
            gate.release()

        tasks = [asyncio.create_task(waiter("b")), asyncio.create_task(waiter("c"))]
        await asyncio.sleep(0.01)
        assert gate.queue_depth == 2
        with pytest.raises(BusyError) as info:
            await gate.acquire("d")
        assert http_status_for(info.value) == 429
        gate.release()
        await asyncio.gather(*tasks)
        assert order == ["b", "c"]
        assert gate.queue_depth == 0 and not gate.busy

    asyncio.run(main())


def test_release_from_another_thread() -> None:
    async def main() -> None:
        gate = GenerationGate(max_queue=1)
        await gate.acquire()
        second = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0.01)
        await asyncio.to_thread(gate.release)
        await asyncio.wait_for(second, 2)
        gate.release()

    asyncio.run(main())


def test_queue_of_zero_refuses_while_busy() -> None:
    async def main() -> None:
        gate = GenerationGate(max_queue=0)
        await gate.acquire()
        with pytest.raises(BusyError):
            await gate.acquire()
        gate.release()
        await gate.acquire()  # free again
        gate.release()

    asyncio.run(main())
