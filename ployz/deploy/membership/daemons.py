"""The machine's daemons (``ployzd``, the NATS server): a systemd service, or a detached process.

``machine init`` and ``machine join`` start them with :func:`start`. Where systemd runs the
machine (``/run/systemd/system`` exists and ``systemctl`` is on PATH), a daemon is a service:
its unit is installed in ``/etc/systemd/system``, enabled and started, and restarted only when
its text changed. Elsewhere (a container, the project's test VM, whose init is not systemd) the
same command runs as a detached process: a session of its own, stdin from ``/dev/null``, stdout
and stderr appended to ``HOME/NAME.log``, its pid in ``HOME/NAME.pid``. Either way
``HOME/NAME.service`` holds the unit text, so what runs, or would run, can be read there.

The process is started by this process itself, with no helper in between (no ``systemd-run``,
no re-exec through something that enters namespaces): it inherits the caller's network
namespace, which the test bed relies on (each of its machines lives in a netns of its own).

Its environment is what a service gets: ``PATH``, the daemon's own ``environment``, and
nothing else of the caller's, so a daemon behaves the same in both modes. It also carries
``PLOYZ_DAEMON=HOME/NAME``: a process counts as the daemon only if its environment says so,
which makes a pid file naming a pid the kernel has since given to another process stale, and
keeps :func:`start` (after an argv change), :func:`stop` and :func:`kill` from ever signalling
an unrelated process.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ployz.deploy.membership.errors import MembershipError
from ployz.private_files import write_private

SYSTEMD_RUN_DIR = Path("/run/systemd/system")
"""Exists exactly when systemd is PID 1 (what ``sd_booted()`` tests)."""
UNIT_DIR = Path("/etc/systemd/system")
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""Where systemd looks for a command given by name, and the PATH its services get."""
MARKER_ENV = "PLOYZ_DAEMON"
STOP_TIMEOUT_S = 10.0
"""How long a daemon has after SIGTERM before SIGKILL: the NATS server flushes its store."""
KILL_TIMEOUT_S = 5.0
EXEC_TIMEOUT_S = 5.0
POLL_S = 0.05
LOG_TAIL_LINES = 20

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BARE_WORD_RE = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")
"""Words systemd reads back unchanged without quotes: no whitespace, quotes, backslashes, ';'
(a command separator), '%' (specifiers) or '$' (variables)."""
_COMMAND_PREFIXES = "-@+!:"
"""Characters systemd reads as prefixes at the start of an unquoted command ('-': ignore its
failure, ...): a command starting with one is quoted."""

_children: dict[int, subprocess.Popen[bytes]] = {}
"""The daemons this process started, so one that exits while we live is reaped (not left a
zombie, which would look alive in /proc) and Python does not warn about a lost child."""


class DaemonError(MembershipError):
    """A daemon could not be started or stopped; the message carries the tool's error or the
    daemon's last log lines."""


@dataclass(frozen=True)
class Daemon:
    """One long-running command of the machine and where its files live."""

    name: str
    """The unit's name without ``.service``, e.g. ``ployzd``."""
    argv: tuple[str, ...]
    """The command: an absolute path or a bare name (looked up in :data:`SERVICE_PATH` after
    the caller's PATH), then its arguments."""
    home: Path
    """Directory of the unit's copy, the pid file and the log."""
    description: str
    environment: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"daemon name {self.name!r}: 1-64 letters, digits, '_', '.' or '-',"
                             " starting with a letter or digit")
        if not self.argv or not self.argv[0]:
            raise ValueError(f"daemon {self.name}: the command is empty")
        command = self.argv[0]
        if "/" in command and not command.startswith("/"):
            raise ValueError(f"daemon {self.name}: the command {command!r} must be an absolute "
                             "path or a bare name")
        if any("\0" in arg for arg in self.argv):
            raise ValueError(f"daemon {self.name}: an argument holds a NUL byte")
        for key, value in self.environment.items():
            if not _ENV_NAME_RE.match(key) or key == MARKER_ENV:
                raise ValueError(f"daemon {self.name}: invalid environment variable {key!r}")
            if "\0" in value:
                raise ValueError(f"daemon {self.name}: ${key} holds a NUL byte")
        if not self.description.isprintable() or self.description.endswith("\\"):
            raise ValueError(f"daemon {self.name}: the description must be one printable line "
                             "not ending in a backslash")

    @property
    def unit_copy(self) -> Path:
        return self.home / f"{self.name}.service"

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.home / f"{self.name}.log"


def unit_text(daemon: Daemon) -> str:
    """The systemd service unit that runs ``daemon``."""
    environment = [
        f"Environment={_quote(_percent(f'{key}={value}'))}"
        for key, value in sorted(daemon.environment.items())
    ]
    command = " ".join(_exec_word(word, first=i == 0) for i, word in enumerate(daemon.argv))
    return "\n".join([
        f"# {daemon.name}: written by `ployzctl machine init` or `join`, which overwrite edits",
        "[Unit]",
        f"Description={_percent(daemon.description)}",
        "Wants=network-online.target",
        "After=network-online.target zfs.target",
        "",
        "[Service]",
        "Type=simple",
        *environment,
        f"ExecStart={command}",
        "Restart=on-failure",
        "RestartSec=2",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def systemd_runs_this_machine() -> bool:
    return SYSTEMD_RUN_DIR.is_dir() and shutil.which("systemctl") is not None


def start(daemon: Daemon) -> str:
    """Starts ``daemon`` unless it already runs as declared; returns what runs it: ``"systemd"``
    or ``"process"``.

    A detached process already running with the same argv is left alone (same pid); one running
    with another argv is stopped first. Under systemd the unit is enabled, so it also starts at
    boot.
    """
    text = unit_text(daemon)
    daemon.home.mkdir(parents=True, exist_ok=True)
    write_private(daemon.unit_copy, text)
    if systemd_runs_this_machine():
        _start_unit(daemon, text)
        return "systemd"
    pid = _own_pid(daemon)
    if pid is not None:
        if _runs(_cmdline(pid), daemon.argv):
            return "process"
        _terminate(daemon, pid)
    _spawn(daemon)
    return "process"


def stop(daemon: Daemon) -> None:
    """Stops ``daemon`` (SIGTERM, SIGKILL after :data:`STOP_TIMEOUT_S`); under systemd also
    disables it, so it does not come back at boot. Nothing happens if it is not running."""
    if systemd_runs_this_machine():
        if (UNIT_DIR / f"{daemon.name}.service").exists():
            _systemctl("disable", "--now", daemon.name)
        return
    pid = _own_pid(daemon)
    if pid is not None:
        _terminate(daemon, pid)
    daemon.pid_file.unlink(missing_ok=True)


def kill(daemon: Daemon) -> None:
    """Kills ``daemon`` at once, as a crash would: no SIGTERM, and the pid file stays. Under
    systemd the unit's ``Restart=on-failure`` brings it back after ``RestartSec``."""
    if systemd_runs_this_machine():
        _systemctl("kill", "--signal=SIGKILL", daemon.name)
        return
    pid = _own_pid(daemon)
    if pid is not None:
        _signal(pid, signal.SIGKILL)
        if not _gone_within(pid, KILL_TIMEOUT_S):
            raise DaemonError(f"{daemon.name} (pid {pid}) survived SIGKILL")


def running(daemon: Daemon) -> bool:
    """Whether ``daemon`` runs, with its declared argv when it is a detached process."""
    if systemd_runs_this_machine():
        return _systemctl_status("is-active", "--quiet", daemon.name) == 0
    pid = _own_pid(daemon)
    return pid is not None and _runs(_cmdline(pid), daemon.argv)


def log_tail(daemon: Daemon, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines the daemon wrote (its log file, or its journal under systemd)."""
    if systemd_runs_this_machine():
        result = subprocess.run(
            ["journalctl", "--unit", daemon.name, "--lines", str(lines), "--no-pager",
             "--output", "cat"],
            capture_output=True, text=True, check=False,
        )
        return (result.stdout if result.returncode == 0 else result.stderr).strip()
    try:
        with daemon.log.open("rb") as log:
            log.seek(max(log.seek(0, os.SEEK_END) - 256 * lines, 0))
            tail = log.read().decode(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return f"({daemon.log} does not exist)"
    return "\n".join(tail)


# --- systemd -------------------------------------------------------------------------------


def _start_unit(daemon: Daemon, text: str) -> None:
    unit = UNIT_DIR / f"{daemon.name}.service"
    try:
        installed: str | None = unit.read_text()
    except FileNotFoundError:
        installed = None
    if installed == text:
        _systemctl("enable", "--now", daemon.name)
        return
    write_private(unit, text)
    _systemctl("daemon-reload")
    if installed is None:
        _systemctl("enable", "--now", daemon.name)
    else:
        _systemctl("enable", daemon.name)
        _systemctl("restart", daemon.name)


def _systemctl(*args: str) -> None:
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise DaemonError(f"`systemctl {' '.join(args)}` failed (exit {result.returncode}): "
                          f"{output}")


def _systemctl_status(*args: str) -> int:
    return subprocess.run(["systemctl", *args], capture_output=True, check=False).returncode


# --- detached processes --------------------------------------------------------------------


def _spawn(daemon: Daemon) -> None:
    environment = {"PATH": _search_path(), **daemon.environment, MARKER_ENV: _marker(daemon)}
    with daemon.log.open("ab") as log:
        try:
            child = subprocess.Popen(
                daemon.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd="/", env=environment, start_new_session=True,
            )
        except OSError as exc:
            raise DaemonError(f"cannot start {daemon.name}: {daemon.argv[0]}: "
                              f"{exc.strerror or exc}") from exc
    _children[child.pid] = child
    write_private(daemon.pid_file, f"{child.pid}\n")
    _wait_for_exec(child.pid)


def _wait_for_exec(pid: int) -> None:
    """Until the kernel has finished the daemon's exec. Popen returns once the exec is past its
    point of no return, before the new command line and environment are in place; until then
    /proc shows them empty, and a :func:`start` right after would not recognise the daemon."""
    deadline = time.monotonic() + EXEC_TIMEOUT_S
    while not _cmdline(pid) and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.001)


def _search_path() -> str:
    """The caller's PATH, then the directories systemd searches: a command found as a service
    is found here too."""
    directories = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    directories += [d for d in SERVICE_PATH.split(":") if d not in directories]
    return os.pathsep.join(directories)


def _own_pid(daemon: Daemon) -> int | None:
    """The pid in the pid file if that process is alive and is this daemon, else None."""
    try:
        pid = int(daemon.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if pid <= 0 or not _alive(pid):
        return None
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone meanwhile, or another user's
        return None
    return pid if os.fsencode(f"{MARKER_ENV}={_marker(daemon)}") in environment else None


def _marker(daemon: Daemon) -> str:
    return str(daemon.home.absolute() / daemon.name)


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the state follows the command name, which is in parentheses and may hold anything
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [os.fsdecode(arg) for arg in raw.split(b"\0")[:-1]]


def _runs(cmdline: Sequence[str], argv: Sequence[str]) -> bool:
    """Whether a process with ``cmdline`` runs ``argv``. A script is started by the kernel as
    its ``#!`` interpreter, with the script's path where ``argv[0]`` was."""
    if list(cmdline) == list(argv):
        return True
    if len(cmdline) <= len(argv):
        return False
    script, *arguments = cmdline[len(cmdline) - len(argv):]
    return arguments == list(argv[1:]) and (
        script == argv[0] or ("/" not in argv[0] and os.path.basename(script) == argv[0]))


def _terminate(daemon: Daemon, pid: int) -> None:
    _signal(pid, signal.SIGTERM)
    if _gone_within(pid, STOP_TIMEOUT_S):
        return
    _signal(pid, signal.SIGKILL)
    if not _gone_within(pid, KILL_TIMEOUT_S):
        raise DaemonError(f"{daemon.name} (pid {pid}) survived SIGTERM and SIGKILL; its log:\n"
                          f"{log_tail(daemon)}")


def _signal(pid: int, signum: signal.Signals) -> None:
    """Signals the daemon's process group, as systemd signals a unit's cgroup: what the daemon
    started goes with it. The daemon leads its group, having its own session."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def _gone_within(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


# --- files and quoting ---------------------------------------------------------------------


def _exec_word(word: str, first: bool) -> str:
    """One word of ``ExecStart=``: systemd expands ``$NAME`` in it at start, ``$$`` is a
    dollar."""
    if _BARE_WORD_RE.match(word) and not (first and word[0] in _COMMAND_PREFIXES):
        return word
    return _quote(_percent(word).replace("$", "$$"))


def _percent(text: str) -> str:
    """``%`` introduces a specifier in every setting used here; ``%%`` is a percent sign."""
    return text.replace("%", "%%")


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _quote(text: str) -> str:
    """A double-quoted word as systemd unquotes it (C escapes, ``\\xNN`` for other controls)."""
    escaped = "".join(
        _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x20 or char == "\x7f"
                               else char)
        for char in text
    )
    return f'"{escaped}"'
