"""``python -m ployz.sandbox run [--machines N] [--control nats|sqlite] -- CMD [ARGS...]``

Boots the real-ZFS VM, builds a cluster of N machines in it with ``ployzctl machine init``,
``invite`` and ``join`` (see ``ployz.sandbox.cluster``), runs CMD as the operator on the first
machine with ``ployzctl`` configured, and exits with CMD's status.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from ployz.deploy.membership.local import ControlKind
from ployz.sandbox.vm import VMError, run_in_vm

GUEST_MEMORY = "6G"


def _in_vm() -> bool:
    return os.environ.get("PLOYZ_IN_VM") == "1" and os.path.exists("/dev/zfs")


def _guest(machines: int, control: ControlKind, command: list[str]) -> int:
    from ployz.sandbox.cluster import Cluster
    from ployz.sandbox.network import SandboxError

    cluster = Cluster(machines, control)
    try:
        try:
            cluster.start()
        except (SandboxError, OSError) as exc:
            print(f"ployz sandbox: {exc}", file=sys.stderr)
            return 3
        print(f"ployz sandbox: {machines} machines up: "
              f"{', '.join(m.id for m in cluster.machines)}", flush=True)
        env = {**os.environ, **cluster.environment()}
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ployz.sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run", help="run CMD against a fresh sandbox cluster")
    run.add_argument("--machines", type=int, default=2)
    run.add_argument("--control", choices=("nats", "sqlite"), default="nats",
                     help="the control plane `machine init` creates (default nats)")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    options = parser.parse_args(argv)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        parser.error("give the command to run after --")
    if _in_vm():
        return _guest(options.machines, options.control, command)
    try:
        return run_in_vm([sys.executable, "-m", "ployz.sandbox", "run", "--machines",
                          str(options.machines), "--control", options.control, "--", *command],
                         memory=GUEST_MEMORY)
    except VMError as exc:
        print(f"ployz sandbox: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
