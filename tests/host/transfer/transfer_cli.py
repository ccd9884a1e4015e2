"""``ployzctl transfer`` as the tests run it: real processes on real sockets.

Output goes to files rather than pipes: a receiver that logs a line per refused connection
would otherwise fill a pipe nobody reads during the test, and block.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLOYZCTL = [sys.executable, "-m", "ployzctl"]
START_TIMEOUT = 30.0  # for a receiver to say where it listens (the interpreter starting)


def ployzctl(*args: object, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs one command to its end."""
    done = subprocess.run([*PLOYZCTL, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@dataclass(frozen=True)
class KeyFiles:
    """A ticket-signing key pair in PEM files, as ``transfer keygen`` writes them."""

    private: Path
    public: Path


class Process:
    """A ``ployzctl`` process running in the background."""

    def __init__(self, args: list[str], logs: Path) -> None:
        self.args = args
        self.out_path = logs.with_suffix(".out")
        self.err_path = logs.with_suffix(".err")
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.popen = subprocess.Popen([*PLOYZCTL, *args], stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL)
        self.started = time.monotonic()

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def summary(self) -> dict[str, Any]:
        """The ``--json`` summary line."""
        lines = self.stdout.splitlines()
        assert lines, f"no JSON summary; stderr:\n{self.stderr}"
        return json.loads(lines[-1])

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int:
        """The exit status; fails the test if the process is still running after
        ``timeout`` seconds (the deadline a hang would exceed)."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ployzctl {' '.join(self.args)} still running after "
                                 f"{timeout} s; stderr:\n{self.stderr}") from None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kills the process (a crash: SIGKILL leaves it no chance to say goodbye)."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(sig)
        self.popen.wait(30)

    def wait_for_stderr(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            if match := re.search(pattern, self.stderr):
                return match
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} from ployzctl {' '.join(self.args)}; "
                                     f"stderr:\n{self.stderr}")
            time.sleep(0.02)


class Receive(Process):
    """A ``transfer receive`` on a loopback port of its own choosing."""

    def __init__(self, args: list[str], logs: Path) -> None:
        super().__init__(args, logs)
        self.address = self.wait_for_stderr(r"listening on (\S+)").group(1)
        host, _, port = self.address.rpartition(":")
        self.host_port = (host, int(port))


class Cli:
    """Starts ``ployzctl transfer`` processes with a test's keys and logs, and kills whatever
    is still running when the test ends."""

    def __init__(self, logs: Path, keys: KeyFiles) -> None:
        self.logs = logs
        self.keys = keys
        self.processes: list[Process] = []

    def _log(self, name: str) -> Path:
        self.logs.mkdir(exist_ok=True)
        return self.logs / f"{len(self.processes):02d}-{name}"

    def receive(self, dst: Path, *args: object, listen: str = "127.0.0.1:0") -> Receive:
        """``transfer receive --file dst`` trusting the test's key, on a port of its own
        choosing unless ``listen`` names one."""
        process = Receive(["transfer", "receive", "--listen", listen, "--file", str(dst),
                           "--trust", str(self.keys.public), *map(str, args)],
                          self._log("receive"))
        self.processes.append(process)
        return process

    def send(self, src: Path, to: str | tuple[str, int], *args: object) -> Process:
        """``transfer send --file src`` signed with the test's key, in the background."""
        if isinstance(to, tuple):
            to = f"{to[0]}:{to[1]}"
        process = Process(["transfer", "send", "--file", str(src), "--to", to,
                           "--key", str(self.keys.private), *map(str, args)],
                          self._log("send"))
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()


def retry_args(attempts: int, backoff: float = 0.05) -> tuple[str, ...]:
    """Sender flags for a test that expects retries: few attempts, short pauses."""
    return ("--retries", str(attempts), "--backoff", str(backoff), "--max-backoff",
            str(backoff * 2))


def wait_for_durable(dst: Path, sender: Process, at_least: int) -> int:
    """Waits until the receiver's partial file of ``dst`` holds ``at_least`` bytes, the sender
    still sending: the moment to break something mid-stream."""
    partial = dst.with_name(dst.name + ".partial")
    deadline = time.monotonic() + 60
    while True:
        size = partial.stat().st_size if partial.exists() else 0
        if size >= at_least:
            return size
        assert sender.poll() is None, f"the sender ended early:\n{sender.stderr}"
        assert time.monotonic() < deadline, f"only {size} bytes arrived"
        time.sleep(0.02)
