"""torch's OpenMP threads wait asleep under the docq command (vlm/threads.py ``quiet_waiting``).

The OpenMP runtime reads ``OMP_WAIT_POLICY`` once, when torch loads: the command must set it
before anything imports torch, and leave a value the user set alone. The CPU time it saves
is measured in benchmarks/cpu_real_size.py (RESULTS.md), not here.
"""

from __future__ import annotations

import subprocess
import sys

from docvqa_cli.vlm.threads import OMP_WAIT_POLICY, quiet_waiting

# Runs `docq doctor` in a fresh interpreter and prints OMP_WAIT_POLICY as it was when torch
# was first imported ("unset" if it was not set then, "never" if torch was never imported).
SPY = """
import importlib.abc, os, sys
seen = []
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY", "unset"))
        return None
sys.meta_path.insert(0, Spy())
from docvqa_cli.cli import main
try:
    main(["doctor"], prog_name="docq")
except SystemExit:
    pass
print("WAIT", seen[0] if seen else "never", file=sys.stderr)
"""


def _policy_when_torch_loads(env: dict) -> str:
    proc = subprocess.run([sys.executable, "-c", SPY], env=env, capture_output=True, text=True, timeout=300)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("WAIT ")]
    assert line, proc.stderr[-2000:]
    return line[-1].split()[1]


def test_the_command_sets_passive_waiting_before_torch_loads(docq_env):
    env = {k: v for k, v in docq_env.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_when_torch_loads(env) == OMP_WAIT_POLICY == "PASSIVE"


def test_a_policy_the_user_set_is_kept(docq_env):
    assert _policy_when_torch_loads({**docq_env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_too_late_once_torch_is_loaded():
    import torch  # noqa: F401 (the case: torch already loaded, its OpenMP settings fixed)

    env = {}
    assert quiet_waiting(env) is False
    assert env == {}


def test_sets_only_an_unset_policy(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh process (restored after the test)
    env = {}
    assert quiet_waiting(env) is True and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "active"}
    assert quiet_waiting(env) is True and env == {"OMP_WAIT_POLICY": "active"}
