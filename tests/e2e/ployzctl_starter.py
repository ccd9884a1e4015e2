"""``ployzctl`` processes for the e2e tests, started from a process that has already imported it.

Under the VM's emulated CPU a new Python process spends 10-30 s importing ployzctl's command
modules (pydantic builds every model's schema at import) before it does anything, and the e2e
suite runs ployzctl dozens of times. So the suite starts one server that imports them once,
and every ``ployzctl`` of a test is a fork of it: a real process of its own, with the test's
argv, environment, working directory and pipes, which runs ``ployzctl.main.main`` and exits
through the interpreter's normal shutdown, and which a test can kill like any other. What the
fork skips is only the import; the installed console script itself is exercised by
``test_sandbox_cluster.py``, and the sandbox's own commands (``machine init``/``join``) run it.

Protocol, over a ``SOCK_SEQPACKET`` UNIX socket, one connection per process: the client sends
one JSON packet (argv, env, cwd) carrying three file descriptors (stdin, stdout, stderr); the
server forks and answers ``{"pid": N}``, then ``{"status": S}`` (a raw wait status) when the
process has ended, and closes the connection.

    python -m tests.e2e.ployzctl_starter SOCKET     # serves until SIGTERM
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

_PRELOADED = ("ployzctl.main", *(f"ployzctl.commands.{group}" for group in (
    "agent", "deploy", "machine", "membership", "migrate", "service", "transfer")),
    "ployz.deploy.drain")
"""Every module a command imports, also those imported only when the command runs."""
_PACKET = 1 << 20
_START_TIMEOUT_S = 300.0


# --- the server --------------------------------------------------------------------------------


def serve(path: Path) -> list[str] | None:
    """Serves until SIGTERM; returns None then. In each forked child it returns instead the
    child's argv, with its stdio, environment and working directory in place."""
    for module in _PRELOADED:
        importlib.import_module(module)
    if threading.active_count() != 1:  # a fork copies only the forking thread
        raise RuntimeError("importing ployzctl started threads; forks of it would be unsafe")
    server_pid = os.getpid()
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(path))
    listener.listen(64)
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wakeup_r, selectors.EVENT_READ)
    waiting: dict[int, socket.socket] = {}
    print(json.dumps({"event": "listening", "socket": str(path)}), flush=True)
    try:
        while not stopping:
            for key, _ in selector.select():
                if key.fileobj is listener:
                    request = _fork_one(listener, waiting)
                    if request is not None:  # the child
                        selector.close()
                        listener.close()
                        for fd in (wakeup_r, wakeup_w):
                            os.close(fd)
                        return request
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wakeup_r, 4096)
                    _reap(waiting)
    finally:
        if os.getpid() == server_pid:
            path.unlink(missing_ok=True)
    return None


def _fork_one(listener: socket.socket, waiting: dict[int, socket.socket]) -> list[str] | None:
    conn, _ = listener.accept()
    message, fds, _, _ = socket.recv_fds(conn, _PACKET, 3)
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        conn.close()
        return None
    request = json.loads(message)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        conn.close()
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        env = dict(request["env"])
        _take_stdio(fds, unbuffered=bool(env.get("PYTHONUNBUFFERED")))
        os.environ.clear()
        os.environ.update(env)
        os.chdir(request["cwd"])
        return list(request["argv"])
    for fd in fds:
        os.close(fd)
    conn.send(json.dumps({"pid": pid}).encode())
    waiting[pid] = conn
    return None


def _take_stdio(fds: Sequence[int], *, unbuffered: bool) -> None:
    """The client's descriptors become 0, 1 and 2, with new text streams over them made the
    way the interpreter makes its own at start-up (line-buffered on a terminal; written through
    with PYTHONUNBUFFERED)."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)

    def stream(fd: int, mode: str) -> IO[str]:
        raw = io.FileIO(fd, mode, closefd=False)
        if mode == "r":
            return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8")
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8",
                                errors="backslashreplace" if fd == 2 else "strict",
                                line_buffering=os.isatty(fd), write_through=unbuffered or fd == 2)

    sys.stdin = sys.__stdin__ = stream(0, "r")
    sys.stdout = sys.__stdout__ = stream(1, "w")
    sys.stderr = sys.__stderr__ = stream(2, "w")


def _reap(waiting: dict[int, socket.socket]) -> None:
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):  # the client may have gone
                conn.send(json.dumps({"status": status}).encode())
            conn.close()


def _run_child(argv: list[str]) -> int:
    from ployzctl.main import main

    sys.argv = ["ployzctl", *argv]
    try:
        return main(argv)
    finally:
        sys.stdout.flush()


# --- the client --------------------------------------------------------------------------------


class Starter:
    """The server process, started once per e2e session in the caller's network namespace."""

    def __init__(self, socket_path: Path, log: Path) -> None:
        self.socket_path = socket_path
        with open(log, "ab") as out:
            self._server = subprocess.Popen(
                [sys.executable, "-m", "tests.e2e.ployzctl_starter", str(socket_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not socket_path.exists():
            if self._server.poll() is not None:
                raise RuntimeError(f"the ployzctl starter exited ({self._server.returncode}); "
                                   f"see {log}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the ployzctl starter did not listen within "
                                   f"{_START_TIMEOUT_S:.0f} s; see {log}")
            time.sleep(0.2)

    def close(self) -> None:
        self._server.terminate()
        try:
            self._server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()

    def popen(self, argv: Sequence[str], env: Mapping[str, str],
              stdin: bool = False) -> StartedProcess:
        """``ployzctl ARGV`` with pipes for stdout and stderr (and stdin when asked, else
        /dev/null), in text mode, like ``subprocess.Popen(..., text=True)``."""
        return StartedProcess(self.socket_path, list(argv), dict(env), stdin)

    def run(self, argv: Sequence[str], env: Mapping[str, str], input: str | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Like ``subprocess.run(["ployzctl", *argv], capture_output=True, text=True)``."""
        process = self.popen(argv, env, stdin=input is not None)
        try:
            stdout, stderr = process.communicate(input, timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        return subprocess.CompletedProcess(["ployzctl", *argv], process.wait(), stdout, stderr)


class StartedProcess:
    """A forked ``ployzctl``: the parts of :class:`subprocess.Popen` the tests use."""

    def __init__(self, socket_path: Path, argv: list[str], env: dict[str, str],
                 stdin: bool) -> None:
        self.args = ["ployzctl", *argv]
        self.returncode: int | None = None
        child_in, self._in_w = os.pipe() if stdin else (os.open(os.devnull, os.O_RDONLY), -1)
        out_r, child_out = os.pipe()
        err_r, child_err = os.pipe()
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._conn.connect(str(socket_path))
            request = json.dumps({"argv": argv, "env": env, "cwd": os.getcwd()}).encode()
            socket.send_fds(self._conn, [request], [child_in, child_out, child_err])
            self.pid = int(json.loads(self._conn.recv(_PACKET))["pid"])
        finally:
            for fd in (child_in, child_out, child_err):
                os.close(fd)
        self.stdin: IO[str] | None = open(self._in_w, "w") if stdin else None  # noqa: SIM115
        self.stdout: IO[str] = open(out_r)  # noqa: SIM115 - closed by communicate or wait
        self.stderr: IO[str] = open(err_r)  # noqa: SIM115

    def poll(self) -> int | None:
        if self.returncode is None:
            self._conn.setblocking(False)
            try:
                self._status(self._conn.recv(_PACKET))
            except BlockingIOError:
                pass
            finally:
                self._conn.setblocking(True)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                self._status(self._conn.recv(_PACKET))
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
            self._conn.close()
        assert self.returncode is not None
        return self.returncode

    def _status(self, packet: bytes) -> None:
        if not packet:
            raise RuntimeError(f"the ployzctl starter lost process {self.pid}")
        self.returncode = os.waitstatus_to_exitcode(int(json.loads(packet)["status"]))

    def communicate(self, input: str | None = None,
                    timeout: float | None = None) -> tuple[str, str]:
        """Writes ``input``, then reads stdout and stderr to their ends together."""
        if self.stdin is not None:
            writer = threading.Thread(target=_write_and_close, args=(self.stdin, input or ""),
                                      daemon=True)
            writer.start()
        read: dict[str, str] = {}
        readers = [threading.Thread(target=_read_into, args=(stream, name, read), daemon=True)
                   for stream, name in ((self.stdout, "out"), (self.stderr, "err"))]
        for reader in readers:
            reader.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for reader in readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return read["out"], read["err"]

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


def _write_and_close(stream: IO[str], text: str) -> None:
    with contextlib.suppress(BrokenPipeError), stream:
        stream.write(text)


def _read_into(stream: IO[str], name: str, into: dict[str, Any]) -> None:
    with stream:
        into[name] = stream.read()


if __name__ == "__main__":
    child = serve(Path(sys.argv[1]))
    if child is not None:
        sys.exit(_run_child(child))
