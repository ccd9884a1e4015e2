"""A separate process that joins a machine, for the concurrent-join test.

python membership_worker.py URL MACHINE WIREGUARD_KEY GATE_FILE
    connects, prints "ready", waits until GATE_FILE exists, adds MACHINE with WIREGUARD_KEY once
    and prints one JSON line: {"id": ..., "overlay_ip": ..., "subnet": ...}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ployz.control import open_control_plane


def join(url: str, machine_id: str, wireguard_key: str, gate: str) -> None:
    with open_control_plane(url) as cp:
        print("ready", flush=True)
        while not Path(gate).exists():
            time.sleep(0.001)
        machine = cp.add_machine(machine_id, wireguard_key, "192.0.2.1:51820")
        print(json.dumps(machine.model_dump(mode="json", include={"id", "overlay_ip", "subnet"})))


if __name__ == "__main__":
    join(*sys.argv[1:])
