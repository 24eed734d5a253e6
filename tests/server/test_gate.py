"""The generation gate: one at a time, a bounded queue, BusyError (429) beyond it."""

from __future__ import annotations

import asyncio

import pytest

from fmgguf.errors import BusyError, http_status_for
from fmgguf.server.gate import GenerationGate

#: a broken gate fails the test at once (TimeoutError) instead of hanging until pytest's timeout
WAIT_S = 2.0


async def acquire(gate: GenerationGate, what: str = "generate") -> None:
    await asyncio.wait_for(gate.acquire(what), WAIT_S)


def test_one_at_a_time_and_bounded_queue() -> None:
    async def main() -> None:
        gate = GenerationGate(max_queue=2)
        order: list[str] = []
        await acquire(gate, "a")
        assert gate.busy

        async def waiter(name: str) -> None:
            await acquire(gate, name)
            order.append(name)
            await asyncio.sleep(0.01)
            gate.release()

        tasks = [asyncio.create_task(waiter("b")), asyncio.create_task(waiter("c"))]
        await asyncio.sleep(0.01)
        assert gate.queue_depth == 2
        with pytest.raises(BusyError) as info:
            await acquire(gate, "d")
        assert http_status_for(info.value) == 429
        gate.release()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
        assert order == ["b", "c"]
        assert gate.queue_depth == 0 and not gate.busy

    asyncio.run(main())


def test_release_from_another_thread() -> None:
    async def main() -> None:
        gate = GenerationGate(max_queue=1)
        await acquire(gate)
        second = asyncio.create_task(acquire(gate))
        await asyncio.sleep(0.01)
        await asyncio.to_thread(gate.release)
        await asyncio.wait_for(second, WAIT_S)
        gate.release()

    asyncio.run(main())


def test_queue_of_zero_refuses_while_busy() -> None:
    async def main() -> None:
        gate = GenerationGate(max_queue=0)
        await acquire(gate)
        with pytest.raises(BusyError):
            await acquire(gate)
        gate.release()
        await acquire(gate)  # free again
        gate.release()

    asyncio.run(main())


def test_generations_share_the_gate_and_a_switch_waits_for_them() -> None:
    """Generations pass side by side (each model's queue decides); a switch holds the gate alone: it
    waits for the running generations, and the generations after it wait for it."""
    async def main() -> None:
        gate = GenerationGate(max_queue=4)
        await acquire_shared(gate)
        await acquire_shared(gate)  # a second generation does not wait for the first
        assert gate.busy and gate.generating == 2 and gate.queue_depth == 0
        order: list[str] = []

        async def switch() -> None:
            await acquire(gate, "load")
            order.append("switch")
            gate.release()

        async def late_generation() -> None:
            await acquire_shared(gate)
            order.append("generation")
            gate.release()

        tasks = [asyncio.create_task(switch())]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(late_generation()))
        await asyncio.sleep(0.01)
        assert order == [] and gate.queue_depth == 2  # the switch waits for both, the late one behind it
        gate.release()
        await asyncio.sleep(0.01)
        assert order == []
        gate.release()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
        assert order == ["switch", "generation"] and not gate.busy

    asyncio.run(main())


async def acquire_shared(gate: GenerationGate) -> None:
    await asyncio.wait_for(gate.acquire("stream", shared=True), WAIT_S)
