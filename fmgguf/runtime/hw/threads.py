"""How many CPU threads llama.cpp computes with: the count llama.cpp's own tools use by default
(common's ``cpu_get_num_math()``: one thread per physical core, every logical CPU where each is a
core, as on most VMs), counted over the CPUs this process may run on, unless the ``threads``
setting (``FMGGUF_THREADS``, ``--threads``) says otherwise.

llama-cpp-python's own default, ``cpu_count() // 2``, assumes two hyper-threads per core: on a
2-vCPU VM it computes with one thread and loses a third of the speed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_SYS_CPU = Path("/sys/devices/system/cpu")


@dataclass(frozen=True)
class ThreadChoice:
    """The threads for generation and prompt processing, and where the number came from."""

    n_threads: int
    #: "setting" (threads / FMGGUF_THREADS / --threads) or "cores" (llama.cpp's default)
    source: str
    #: logical CPUs this process may run on
    cpus: int
    #: physical cores among them
    cores: int

    @property
    def label(self) -> str:
        how = "set by threads / FMGGUF_THREADS / --threads" if self.source == "setting" else "llama.cpp's default"
        return f"{self.n_threads} ({how}; {self.cores} cores, {self.cpus} logical CPUs usable)"

    def as_dict(self) -> dict[str, int | str]:
        return {"n_threads": self.n_threads, "source": self.source, "cpus": self.cpus, "cores": self.cores}


def usable_cpus() -> list[int]:
    """The logical CPUs this process may run on (its affinity mask), in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int], sys_cpu: Path = _SYS_CPU) -> int:
    """Physical cores among ``cpus``: the distinct hyper-thread sibling sets they belong to, as
    llama.cpp counts them (every CPU is a core where the kernel does not say)."""
    siblings: set[str] = set()
    for cpu in cpus:
        try:
            siblings.add((sys_cpu / f"cpu{cpu}" / "topology" / "thread_siblings").read_text().strip())
        except OSError:
            siblings.add(f"cpu{cpu}")
    return max(1, len(siblings))


def choose_threads(setting: int | None = None) -> ThreadChoice:
    """``setting`` when given (at least 1), else one thread per usable physical core."""
    cpus = usable_cpus()
    cores = min(physical_cores(cpus), len(cpus)) if cpus else 1
    if setting is not None and int(setting) > 0:
        return ThreadChoice(int(setting), "setting", len(cpus), cores)
    return ThreadChoice(cores, "cores", len(cpus), cores)
