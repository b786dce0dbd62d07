"""How torch's CPU threads wait: asleep, not spinning (``quiet_waiting``).

torch's OpenMP threads spin while they wait for each other at the end of every parallel
region (the runtime's default). On a machine busy with other work (more runnable jobs than
cores), the waiting thread burns the core its partner needs, and a model's thousands of small
operations each pay that. With ``OMP_WAIT_POLICY=PASSIVE`` they sleep instead: same threads,
same answers, 1.58x less CPU time a SmolVLM-256M question on the shared 2-core dev machine
(benchmarks/RESULTS.md, "Threads that wait asleep"). The ``docq`` command calls
``quiet_waiting`` before anything imports torch. Standard library only: the command imports
this module when it starts, before it knows which command runs.
"""

from __future__ import annotations

import os
import sys

OMP_WAIT_POLICY = "PASSIVE"


def quiet_waiting(environ=os.environ) -> bool:
    """Let torch's OpenMP threads wait asleep: ``OMP_WAIT_POLICY`` set to ``PASSIVE`` in
    ``environ`` unless already set. The OpenMP runtime reads it once, when torch loads, so
    this only acts before torch is imported (True then); child processes (the reader, Ray
    workers) inherit it."""
    if "torch" in sys.modules:
        return False
    environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    return True
