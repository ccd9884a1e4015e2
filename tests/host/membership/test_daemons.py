"""Daemons as detached processes, with real processes: started once, restarted on an argv
change, stopped, killed, recognised after a restart of the caller and never confused with an
unrelated process; and the unit text as systemd itself parses it (``systemd-analyze``)."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ployz.deploy.membership import daemons
from ployz.deploy.membership.daemons import Daemon, DaemonError, unit_text

pytestmark = pytest.mark.host

SLEEP = shutil.which("sleep") or "/bin/sleep"
CLONE_NEWNET = 0x40000000


@pytest.fixture(autouse=True)
def without_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Process mode even on a host that systemd runs: a test never installs a unit."""
    monkeypatch.setattr(daemons, "SYSTEMD_RUN_DIR", tmp_path / "no-systemd")


@pytest.fixture
def cleanup() -> Iterator[Callable[[Daemon], Daemon]]:
    """Registers a daemon to stop at the end of the test, whatever happened."""
    started: list[Daemon] = []

    def register(daemon: Daemon) -> Daemon:
        started.append(daemon)
        return daemon

    yield register
    for daemon in started:
        daemons.stop(daemon)


def _sleeper(home: Path, seconds: str = "300", name: str = "sleeper") -> Daemon:
    return Daemon(name=name, argv=(SLEEP, seconds), home=home, description="a test sleeper")


def _pid(daemon: Daemon) -> int:
    return int(daemon.pid_file.read_text())


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s")
        time.sleep(0.02)


def test_a_daemon_runs_detached_with_its_files_and_only_its_environment(
        tmp_path: Path, cleanup: Callable[[Daemon], Daemon],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLOYZ_TEST_CALLER_ONLY", "1")
    daemon = cleanup(Daemon(name="sleeper", argv=(SLEEP, "300"), home=tmp_path / "home",
                            description="a test sleeper", environment={"GREETING": "hello"}))
    assert daemons.start(daemon) == "process"
    assert daemons.running(daemon)
    pid = _pid(daemon)
    assert os.getsid(pid) == pid  # a session of its own: the caller's terminal cannot stop it
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/1") == os.readlink(f"/proc/{pid}/fd/2") == str(daemon.log)
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    environment = dict(entry.split("=", 1) for entry in
                       Path(f"/proc/{pid}/environ").read_text().split("\0") if entry)
    assert environment.keys() == {"PATH", "GREETING", "PLOYZ_DAEMON"}
    assert environment["PLOYZ_DAEMON"] == str(tmp_path / "home" / "sleeper")
    assert daemon.unit_copy.read_text() == unit_text(daemon)


def test_a_second_start_leaves_the_running_daemon_alone(
        tmp_path: Path, cleanup: Callable[[Daemon], Daemon]) -> None:
    daemon = cleanup(_sleeper(tmp_path))
    daemons.start(daemon)
    pid = _pid(daemon)
    assert daemons.start(daemon) == "process"
    assert _pid(daemon) == pid
    assert _alive(pid)


def test_a_changed_argv_replaces_the_running_process(
        tmp_path: Path, cleanup: Callable[[Daemon], Daemon]) -> None:
    old = _sleeper(tmp_path, "300")
    daemons.start(old)
    old_pid = _pid(old)
    new = cleanup(_sleeper(tmp_path, "301"))
    assert not daemons.running(new)
    daemons.start(new)
    assert not _alive(old_pid)
    assert _pid(new) != old_pid
    assert daemons.running(new)
    assert not daemons.running(old)


def test_stop_ends_the_daemon_and_forgets_its_pid(tmp_path: Path) -> None:
    daemon = _sleeper(tmp_path)
    daemons.start(daemon)
    pid = _pid(daemon)
    daemons.stop(daemon)
    assert not _alive(pid)
    assert not daemon.pid_file.exists()
    assert not daemons.running(daemon)
    daemons.stop(daemon)  # stopping what is not running does nothing


def test_a_daemon_ignoring_sigterm_is_killed_with_what_it_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemons, "STOP_TIMEOUT_S", 0.5)
    daemon = Daemon(name="stubborn", argv=("/bin/sh", "-c", f"trap '' TERM; {SLEEP} 300; :"),
                    home=tmp_path, description="ignores SIGTERM")
    daemons.start(daemon)
    pid = _pid(daemon)
    _wait(lambda: len(_children_of(pid)) == 1, "the shell started its sleep")
    child = _children_of(pid)[0]
    daemons.stop(daemon)
    assert not _alive(pid)
    _wait(lambda: not _alive(child), "the daemon's own child was killed with it")


def _children_of(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(child) for task in tasks.iterdir()
            for child in (task / "children").read_text().split()]


def test_a_killed_daemon_leaves_its_pid_file_and_starts_again(
        tmp_path: Path, cleanup: Callable[[Daemon], Daemon]) -> None:
    daemon = cleanup(_sleeper(tmp_path))
    daemons.start(daemon)
    pid = _pid(daemon)
    daemons.kill(daemon)
    assert not _alive(pid)
    assert daemon.pid_file.exists()
    assert not daemons.running(daemon)
    daemons.start(daemon)
    assert daemons.running(daemon)
    assert _pid(daemon) != pid


def test_a_pid_file_naming_a_dead_process_is_stale(
        tmp_path: Path, cleanup: Callable[[Daemon], Daemon]) -> None:
    daemon = cleanup(_sleeper(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    daemon.pid_file.write_text(f"{dead.pid}\n")
    assert not daemons.running(daemon)
    daemons.start(daemon)
    assert daemons.running(daemon)
    assert _pid(daemon) != dead.pid


@pytest.mark.parametrize("content", ["", "garbage\n", "-1\n", "0\n"])
def test_a_garbled_pid_file_is_stale(
        tmp_path: Path, cleanup: Callable[[Daemon], Daemon], content: str) -> None:
    daemon = cleanup(_sleeper(tmp_path))
    daemon.pid_file.write_text(content)
    daemons.start(daemon)
    assert daemons.running(daemon)


@pytest.mark.parametrize("same_argv", [True, False])
def test_a_pid_reused_by_an_unrelated_process_is_never_signalled(
        tmp_path: Path, cleanup: Callable[[Daemon], Daemon], same_argv: bool) -> None:
    """The pid file names a live process that this module did not start (as after a reboot or
    a pid reused): even with the same command line, it is not the daemon."""
    daemon = cleanup(_sleeper(tmp_path, "300"))
    stranger = subprocess.Popen([SLEEP, "300" if same_argv else "299"])
    try:
        daemon.pid_file.write_text(f"{stranger.pid}\n")
        assert not daemons.running(daemon)
        daemons.kill(daemon)
        daemons.stop(daemon)
        daemon.pid_file.write_text(f"{stranger.pid}\n")
        daemons.start(daemon)
        assert stranger.poll() is None
        assert _pid(daemon) != stranger.pid
        assert daemons.running(daemon)
    finally:
        stranger.kill()
        stranger.wait()


def test_a_daemon_started_by_an_earlier_caller_is_recognised(
        tmp_path: Path, cleanup: Callable[[Daemon], Daemon]) -> None:
    """Another ployzctl run started it: the pid file and the process are all there is."""
    cleanup(_sleeper(tmp_path))
    script = ("import sys; from pathlib import Path; from ployz.deploy.membership import daemons;"
              f"daemons.SYSTEMD_RUN_DIR = Path({str(tmp_path / 'no-systemd')!r});"
              f"daemons.start(daemons.Daemon(name='sleeper', argv=({SLEEP!r}, '300'),"
              f" home=Path({str(tmp_path)!r}), description='a test sleeper'))")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    daemon = _sleeper(tmp_path)
    pid = _pid(daemon)
    assert daemons.running(daemon)
    daemons.start(daemon)
    assert _pid(daemon) == pid
    daemons.stop(daemon)
    assert not _alive(pid)


def test_a_script_runs_through_its_interpreter_and_is_still_recognised(
        tmp_path: Path, cleanup: Callable[[Daemon], Daemon]) -> None:
    script = tmp_path / "wait-a-while"
    script.write_text(f"#!/bin/sh\n{SLEEP} 300\n")
    script.chmod(0o755)
    daemon = cleanup(Daemon(name="script", argv=(str(script), "--flag"), home=tmp_path,
                            description="a script"))
    daemons.start(daemon)
    pid = _pid(daemon)
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"/bin/sh"
    assert daemons.running(daemon)
    daemons.start(daemon)
    assert _pid(daemon) == pid


def test_the_daemon_inherits_the_callers_network_namespace(
        tmp_path: Path, cleanup: Callable[[Daemon], Daemon]) -> None:
    """As the test bed starts a machine's daemons: from a thread inside the machine's netns."""
    daemon = cleanup(_sleeper(tmp_path))
    libc = ctypes.CDLL(None, use_errno=True)

    def start_in_new_netns() -> int:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        daemons.start(daemon)
        return os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino

    with ThreadPoolExecutor(1) as thread:
        netns = thread.submit(start_in_new_netns).result()
    assert netns != os.stat("/proc/self/ns/net").st_ino
    assert os.stat(f"/proc/{_pid(daemon)}/ns/net").st_ino == netns


def test_a_missing_command_is_reported(tmp_path: Path) -> None:
    daemon = Daemon(name="missing", argv=("/nonexistent/ployzd",), home=tmp_path,
                    description="not there")
    with pytest.raises(DaemonError,
                       match=r"^cannot start missing: /nonexistent/ployzd: No such file"):
        daemons.start(daemon)
    assert not daemon.pid_file.exists()


def test_a_bare_command_is_found_where_systemd_would_find_it(
        tmp_path: Path, cleanup: Callable[[Daemon], Daemon],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    daemon = cleanup(Daemon(name="bare", argv=("sleep", "300"), home=tmp_path,
                            description="found in /usr/bin"))
    daemons.start(daemon)
    assert daemons.running(daemon)


def test_the_log_tail_holds_what_the_daemon_wrote(tmp_path: Path) -> None:
    daemon = Daemon(name="talker", argv=("/bin/sh", "-c", "seq 1 50; echo oops >&2"),
                    home=tmp_path, description="writes and exits")
    assert "does not exist" in daemons.log_tail(daemon)
    daemons.start(daemon)
    _wait(lambda: not daemons.running(daemon), "the talker exited")
    assert daemons.log_tail(daemon, lines=3) == "49\n50\noops"
    daemons.start(daemon)  # exited: started again, its output appended
    _wait(lambda: daemons.log_tail(daemon, lines=200).count("oops") == 2,
          "the second run wrote its log")


def test_a_failing_systemctl_reports_its_error() -> None:
    """Read-only, and failing everywhere: with systemd (no such unit) or without (not booted)."""
    if shutil.which("systemctl") is None:
        pytest.fail("systemctl not found: apt-get install systemd", pytrace=False)
    with pytest.raises(DaemonError, match=r"^`systemctl cat ployz-no-such-unit` failed \(exit "):
        daemons._systemctl("cat", "ployz-no-such-unit")


# --- systemd reads the unit back -----------------------------------------------------------


def _analyze(unit: Path) -> str:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found: apt-get install systemd", pytrace=False)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug"}, check=False)
    problems = [line for line in result.stderr.splitlines() if line.startswith(str(unit))]
    assert result.returncode == 0 and not problems, result.stderr
    return result.stdout + result.stderr


def _displayed_words(line: str) -> list[str]:
    """The words of systemd's display of a command line (shell-like quoting, C escapes)."""
    words: list[str] = []
    chars = iter(line)
    simple = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
    for char in chars:
        if char == " ":
            continue
        word = []
        if char != '"':
            word.append(char)
            word += iter(lambda: next(chars, " "), " ")
        else:
            for inner in chars:
                if inner == '"':
                    break
                if inner != "\\":
                    word.append(inner)
                    continue
                escape = next(chars)
                if escape in simple:
                    word.append(simple[escape])
                elif escape.isdigit():
                    word.append(chr(int(escape + next(chars) + next(chars), 8)))
                else:
                    word.append(escape)
        words.append("".join(word))
    return words


TRICKY = ("plain", "two words", "", ";", "$HOME", "${X}", "100%", "%n", 'q"x', "back\\slash",
          "it's", "line\nbreak", "tab\there", "bell\x07", "grüße", "-x", "@y", "a=b,c:d")


def test_systemd_parses_the_command_back_into_the_argv(tmp_path: Path) -> None:
    daemon = Daemon(name="pz-quoting", argv=("/bin/echo", *TRICKY), home=tmp_path,
                    description="100% \"quoted\" 'x'", environment={"URL": 'a "b" $c %d'})
    unit = tmp_path / "pz-quoting.service"
    unit.write_text(unit_text(daemon))
    dump = _analyze(unit).splitlines()
    command = next(line for line in dump if "Command Line:" in line).split("Command Line: ", 1)[1]
    # What systemd stores; it turns '$$' into '$' (and '$X' into X's value) when it starts.
    assert _displayed_words(command) == ["/bin/echo", *(w.replace("$", "$$") for w in TRICKY)]
    assert any(line.strip() == 'Environment: URL=a "b" $c %d' for line in dump)
    assert any(line.strip() == "Description: 100% \"quoted\" 'x'" for line in dump)


def test_the_process_gets_the_same_argv_and_is_recognised_by_it(
        tmp_path: Path, cleanup: Callable[[Daemon], Daemon]) -> None:
    """The other half: a detached process receives the argv as given, whatever it holds."""
    argv = ("/bin/sh", "-c", f"{SLEEP} 300", "sh", *TRICKY)
    daemon = cleanup(Daemon(name="pz-argv", argv=argv, home=tmp_path, description="argv"))
    daemons.start(daemon)
    pid = _pid(daemon)
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert raw.split(b"\0")[:-1] == [os.fsencode(arg) for arg in argv]
    assert daemons.running(daemon)
    daemons.start(daemon)
    assert _pid(daemon) == pid
