"""Runs commands inside a small VM that boots the Debian kernel carrying the dkms-built ZFS module.

The development machines' own kernel cannot load modules, so real-ZFS work happens in a guest
booted by virtme-ng under qemu with the host's root file system shared read-only: the guest sees
the same Python, virtualenv and checkout. Writes that must reach the host go to ``--rwdir``
folders; the guest's exit status travels back through a file in one of them, because qemu's own
exit status does not carry it.

    python -m ployz.sandbox.vm pytest tests/zfs        # one boot for the whole suite
    python -m ployz.sandbox.vm run -- bash script.sh
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
REPORTS = PROJECT / "reports"
# The whole real-ZFS and sandbox suite, with room to spare: under emulation it takes about 72 min
# (every agent or ployzctl start costs tens of seconds there), and CI allows 90 for everything.
DEFAULT_TIMEOUT = 82 * 60
# qemu's emulated CPU without the fast-string features. With them, the kernel (and glibc) copy
# memory with `rep movsb`, which software emulation runs a byte at a time: a pipe then moves
# 128 MiB in 2.4 CPU s instead of 0.6, so every copy weighs four times what it does on hardware
# and the VM's figures would mostly measure the emulator. PLOYZ_VM_CPU overrides it (qemu -cpu).
CPU_MODEL = os.environ.get("PLOYZ_VM_CPU", "max,erms=off,fsrm=off")


class VMError(RuntimeError):
    """The VM could not be booted; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class Kernel:
    image: str
    version: str


def find_kernel() -> Kernel:
    """The newest installed kernel that has a dkms-built zfs module."""
    images = sorted(glob.glob("/boot/vmlinuz-*"), reverse=True)
    if not images:
        raise VMError("no kernel image in /boot: run `make setup` (installs linux-image-amd64 "
                      "from bookworm-backports)")
    for image in images:
        version = image.removeprefix("/boot/vmlinuz-")
        if glob.glob(f"/lib/modules/{version}/updates/dkms/zfs.ko*"):
            if not os.access(image, os.R_OK):
                raise VMError(f"kernel image {image} is not readable")
            return Kernel(image, version)
    raise VMError(
        "no installed kernel has the ZFS module (looked for /lib/modules/<version>/updates/dkms/"
        f"zfs.ko* for {', '.join(images)}): run `make setup`, which installs zfs-dkms")


def _require_tools() -> str:
    venv_bin = Path(sys.executable).parent
    vng = shutil.which("vng", path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    if vng is None:
        raise VMError("virtme-ng (`vng`) is not installed: run `make setup`")
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("busybox", "busybox-static")):
        if shutil.which(tool) is None:
            raise VMError(f"{tool} is missing: apt-get install {package} (or `make setup`)")
    return vng


def _guest_script(command: list[str], status_file: Path, env: dict[str, str]) -> str:
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
    return f"""set -u
{exports}
cd {shlex.quote(str(PROJECT))}
if ! modprobe zfs; then
    echo "ployz vm: modprobe zfs failed in the guest" >&2
    echo 97 > {shlex.quote(str(status_file))}
    exit 97
fi
modprobe wireguard 2>/dev/null || true
{shlex.join(command)}
status=$?
echo $status > {shlex.quote(str(status_file))}
exit $status
"""


def _relay_console(argv: list[str], env: dict[str, str], timeout: float) -> None:
    """Runs qemu with its console on a pipe that we copy to our stdout: given a file directly,
    the console reopens and truncates it, losing what was written before."""
    with subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, start_new_session=True) as proc:
        assert proc.stdout is not None
        timed_out = threading.Event()

        def kill_vm() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        def expire() -> None:
            timed_out.set()
            kill_vm()

        timer = threading.Timer(timeout, expire)
        timer.start()
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            for line in iter(proc.stdout.readline, b""):
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()
            proc.wait()
        finally:
            timer.cancel()
            signal.signal(signal.SIGTERM, previous)
            if proc.poll() is None:  # we were interrupted: qemu must not outlive us
                kill_vm()
        if timed_out.is_set():
            raise VMError(f"the VM run did not finish within {timeout:.0f} s")


@contextlib.contextmanager
def _one_vm_at_a_time() -> Iterator[None]:
    """Holds the project's VM lock while a VM runs. Two emulated VMs on a machine with few
    cores each run several times slower than one after the other, and a suite's time limits
    are set for one; so a second run waits its turn (and says so) instead."""
    with open(REPORTS / ".vm.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("ployz vm: another VM run of this project is in progress; waiting for it",
                  file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run_in_vm(command: list[str], *, cpus: int = 2, memory: str = "3G",
              rwdirs: list[Path] | None = None, timeout: float = DEFAULT_TIMEOUT,
              env: dict[str, str] | None = None) -> int:
    """Boots the ZFS VM, runs ``command`` in the project folder as root and returns its exit
    status."""
    kernel = find_kernel()
    vng = _require_tools()
    REPORTS.mkdir(exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    guest_env = {
        "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/tmp",
        "PLOYZ_IN_VM": "1",
        "PLOYZ_REPORTS": str(REPORTS),
        **(env or {}),
    }
    with tempfile.TemporaryDirectory(prefix="ployz-vm-") as scratch:
        status_file = REPORTS / f".vm-status-{os.getpid()}"
        status_file.unlink(missing_ok=True)
        script = Path(scratch) / "guest.sh"
        script.write_text(_guest_script(command, status_file, guest_env))
        argv = [vng, "--run", kernel.image, "--disable-kvm", "--force-9p",
                "--cpus", str(cpus), "--memory", memory, "--rwdir", str(REPORTS)]
        for extra in rwdirs or []:
            argv += ["--rwdir", str(extra)]
        argv += ["--exec", f"bash {shlex.quote(str(script))}", f"--qemu-opts=-cpu {CPU_MODEL}"]
        host_env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
        with _one_vm_at_a_time():
            _relay_console(argv, host_env, timeout)
        if not status_file.exists():
            raise VMError(
                f"the VM did not report an exit status: kernel {kernel.version} may have failed "
                "to boot (see the console output above)")
        status = status_file.read_text().strip()
        status_file.unlink()
        if not re.fullmatch(r"\d+", status):
            raise VMError(f"the VM reported a garbled exit status {status!r}")
        return int(status)


def _pytest_command(args: list[str]) -> list[str]:
    junit = REPORTS / "zfs-junit.xml"
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
            f"--junitxml={junit}", *args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ployz.sandbox.vm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--memory", default="3G")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("pytest", help="run pytest with these arguments in the VM").add_argument(
        "args", nargs=argparse.REMAINDER)
    sub.add_parser("run", help="run a command in the VM").add_argument(
        "args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    args = options.args
    if options.mode == "run" and args[:1] == ["--"]:
        args = args[1:]
    command = _pytest_command(args) if options.mode == "pytest" else args
    if not command:
        parser.error("no command given")
    try:
        return run_in_vm(command, cpus=options.cpus, memory=options.memory,
                         timeout=options.timeout)
    except VMError as exc:
        print(f"ployz vm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
