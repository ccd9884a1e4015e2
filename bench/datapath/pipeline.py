"""The one way every contender is run and measured: a receiving command started first and
waited for (its port listening), then a sending command; wall time from the start of the send
until both have exited, and the CPU seconds of both process trees from the kernel's resource
accounting of reaped children (so every process of a shell pipeline counts, and threads too).

Either side may run in a network namespace. A sender that prints ``ready`` and waits for a
line on stdin (``handshake``) is started before the clock, which leaves interpreter start-up
out of the measurement for contenders written in Python.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = float(os.environ.get("PLOYZ_BENCH_TIMEOUT", "600"))
LISTEN_TIMEOUT = 120.0  # an interpreter starting under software emulation takes its time


@dataclass(frozen=True)
class Pipeline:
    send: str  # shell command of the sending side (or the whole pipeline)
    receive: str | None = None  # shell command of the receiving side, started first
    port: int | None = None  # the receiving side is ready once this TCP port listens
    send_ns: str | None = None
    receive_ns: str | None = None
    handshake: bool = False  # the sender prints "ready" and then waits for a line on stdin


@dataclass(frozen=True)
class Measured:
    seconds: float
    cpu: float  # user + system seconds of every process of both sides
    send_out: str
    send_err: str
    receive_out: str


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def argv(command: str, netns: str | None) -> list[str]:
    shell = ["bash", "-o", "pipefail", "-c", command]
    return shell if netns is None else ["ip", "netns", "exec", netns, *shell]


def listening(port: int, netns: str | None) -> bool:
    probe = ["ss", "-ltnH"] if netns is None else ["ip", "netns", "exec", netns, "ss", "-ltnH"]
    return f":{port} " in subprocess.run(probe, capture_output=True, text=True).stdout


def stop(proc: subprocess.Popen[str] | None) -> None:
    """Kills a side's whole process group if it is still running (failure paths only)."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def tail(text: str) -> str:
    return " ".join(text.strip().splitlines()[-3:])[-400:]


def run(pipeline: Pipeline) -> Measured:
    """Runs one contender once; raises RuntimeError with the failing side's last words."""
    with tempfile.TemporaryDirectory(prefix="ployz-pipe-") as tmp:
        logs = Path(tmp)
        receiver: subprocess.Popen[str] | None = None
        sender: subprocess.Popen[str] | None = None
        try:
            with (open(logs / "rx.out", "w") as rx_out, open(logs / "rx.err", "w") as rx_err,
                  open(logs / "tx.err", "w") as tx_err):
                if pipeline.receive is not None:
                    receiver = subprocess.Popen(argv(pipeline.receive, pipeline.receive_ns),
                                                stdout=rx_out, stderr=rx_err, text=True,
                                                start_new_session=True)
                    wait_listening(pipeline, receiver, logs)
                sender = subprocess.Popen(argv(pipeline.send, pipeline.send_ns),
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=tx_err, text=True,
                                          start_new_session=True)
                if pipeline.handshake:
                    assert sender.stdout is not None and sender.stdin is not None
                    if sender.stdout.readline().strip() != "ready":
                        raise RuntimeError(f"sender did not start: "
                                           f"{tail((logs / 'tx.err').read_text())}")
                cpu, start = children_cpu(), time.perf_counter()
                send_out, _ = sender.communicate("go\n", timeout=TIMEOUT)
                send_err = (logs / "tx.err").read_text()
                if sender.returncode != 0:  # the receiver may wait forever: not for it
                    # some tools (bzfs) report their errors on stdout, not stderr
                    raise RuntimeError(f"sender exited {sender.returncode}: "
                                       f"{tail(send_err) or tail(send_out or '')}")
                if receiver is not None:
                    receiver.wait(timeout=TIMEOUT)
                seconds, cpu = time.perf_counter() - start, children_cpu() - cpu
            if receiver is not None and receiver.returncode != 0:
                raise RuntimeError(f"receiver exited {receiver.returncode}: "
                                   f"{tail((logs / 'rx.err').read_text())}")
            return Measured(seconds, cpu, send_out, send_err, (logs / "rx.out").read_text())
        finally:
            stop(sender)
            stop(receiver)


def wait_listening(pipeline: Pipeline, receiver: subprocess.Popen[str], logs: Path) -> None:
    if pipeline.port is None:
        return
    deadline = time.monotonic() + LISTEN_TIMEOUT
    while not listening(pipeline.port, pipeline.receive_ns):
        if receiver.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"receiver did not listen on {pipeline.port}: "
                               f"{tail((logs / 'rx.err').read_text())}")
        time.sleep(0.02)
