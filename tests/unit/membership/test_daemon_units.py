"""A daemon's systemd unit: its text and quoting, what a Daemon accepts, and the systemctl calls
``start`` and ``stop`` make where systemd runs the machine (recorded, not run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ployz.deploy.membership import daemons
from ployz.deploy.membership.daemons import Daemon, unit_text


def _daemon(*argv: str, **fields: object) -> Daemon:
    values: dict[str, object] = {"name": "ployzd", "argv": argv or ("/usr/bin/ployzd",),
                                 "home": Path("/var/lib/ployz"), "description": "ployz agent"}
    return Daemon(**(values | fields))  # type: ignore[arg-type]


def test_the_unit_runs_the_command_as_a_simple_service_restarted_on_failure() -> None:
    text = unit_text(_daemon("/usr/bin/nats-server", "-c", "/var/lib/ployz/nats/server.conf",
                             environment={"B": "2", "A": "1"}))
    assert text == """\
# ployzd: written by `ployzctl machine init` or `join`, which overwrite edits
[Unit]
Description=ployz agent
Wants=network-online.target
After=network-online.target zfs.target

[Service]
Type=simple
Environment="A=1"
Environment="B=2"
ExecStart=/usr/bin/nats-server -c /var/lib/ployz/nats/server.conf
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""


@pytest.mark.parametrize(("word", "written"), [
    ("--listen", "--listen"),
    ("10.210.0.2:7000", "10.210.0.2:7000"),
    ("nats://u:p@192.0.2.1:4222?replicas=3", '"nats://u:p@192.0.2.1:4222?replicas=3"'),
    ("ed25519:AAAA+/==", "ed25519:AAAA+/=="),
    ("two words", '"two words"'),
    ("", '""'),
    (";", '";"'),
    ("$HOME", '"$$HOME"'),
    ("${HOME}", '"$${HOME}"'),
    ("100%", '"100%%"'),
    ("%n", '"%%n"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("it's", '"it\'s"'),
    ("line\nbreak\ttab", '"line\\nbreak\\ttab"'),
    ("bell\x07", '"bell\\x07"'),
    ("grüße", '"grüße"'),
    ("-", "-"),
    ("@x", "@x"),
])
def test_each_argument_is_written_so_systemd_reads_it_back(word: str, written: str) -> None:
    text = unit_text(_daemon("/usr/bin/ployzd", word))
    assert f"\nExecStart=/usr/bin/ployzd {written}\n" in text


@pytest.mark.parametrize(("command", "written"), [
    ("nats-server", "nats-server"),
    ("-nats", '"-nats"'),  # a bare '-' would make systemd ignore the command's failure
    ("@nats", '"@nats"'),
    ("/opt/my tools/nats", '"/opt/my tools/nats"'),
])
def test_the_command_never_reads_as_an_executable_prefix(command: str, written: str) -> None:
    assert f"\nExecStart={written}\n" in unit_text(_daemon(command))


def test_environment_values_and_the_description_escape_what_systemd_expands() -> None:
    text = unit_text(_daemon(description="50% of 'x'", environment={"URL": 'a "b" $c %d'}))
    assert "\nDescription=50%% of 'x'\n" in text
    assert '\nEnvironment="URL=a \\"b\\" $c %%d"\n' in text  # no $ expansion in Environment=


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "ployz d"}, "daemon name 'ployz d'"),
    ({"name": ""}, "daemon name ''"),
    ({"argv": ()}, "the command is empty"),
    ({"argv": ("",)}, "the command is empty"),
    ({"argv": ("bin/ployzd",)}, "must be an absolute path or a bare name"),
    ({"argv": ("/bin/x", "a\0b")}, "NUL"),
    ({"environment": {"1X": "y"}}, "invalid environment variable '1X'"),
    ({"environment": {"PLOYZ_DAEMON": "y"}}, "invalid environment variable 'PLOYZ_DAEMON'"),
    ({"environment": {"X": "a\0"}}, "NUL"),
    ({"description": "two\nlines"}, "one printable line"),
    ({"description": "ends in \\"}, "not ending in a backslash"),
])
def test_a_daemon_that_cannot_be_written_as_a_unit_is_refused(
        fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _daemon(**fields)


@pytest.mark.parametrize(("cmdline", "argv", "runs"), [
    (["/usr/bin/sleep", "5"], ("/usr/bin/sleep", "5"), True),
    (["/usr/bin/sleep", "6"], ("/usr/bin/sleep", "5"), False),
    (["/usr/bin/python3", "/usr/local/bin/ployzd", "-x"], ("/usr/local/bin/ployzd", "-x"), True),
    (["/usr/bin/python3", "/usr/local/bin/ployzd", "-x"], ("ployzd", "-x"), True),
    (["/usr/bin/python3", "/usr/local/bin/ployzd", "-x"], ("/opt/ployzd", "-x"), False),
    (["/usr/bin/python3", "-x"], ("/usr/local/bin/ployzd", "-x"), False),
    ([], ("/usr/bin/sleep",), False),
])
def test_a_script_started_through_its_interpreter_runs_its_argv(
        cmdline: list[str], argv: tuple[str, ...], runs: bool) -> None:
    assert daemons._runs(cmdline, argv) is runs


class _Systemd:
    """Stands in for systemctl: records the calls, holds the unit directory."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.unit_dir = tmp_path / "etc-systemd-system"
        self.unit_dir.mkdir()
        monkeypatch.setattr(daemons, "UNIT_DIR", self.unit_dir)
        monkeypatch.setattr(daemons, "systemd_runs_this_machine", lambda: True)
        monkeypatch.setattr(daemons, "_systemctl", lambda *args: self.calls.append(args))


@pytest.fixture
def systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> _Systemd:
    return _Systemd(monkeypatch, tmp_path)


def test_under_systemd_a_new_unit_is_installed_enabled_and_started(
        systemd: _Systemd, tmp_path: Path) -> None:
    daemon = _daemon("/usr/bin/ployzd", "--x", home=tmp_path / "home")
    assert daemons.start(daemon) == "systemd"
    installed = systemd.unit_dir / "ployzd.service"
    assert installed.read_text() == unit_text(daemon) == daemon.unit_copy.read_text()
    assert installed.stat().st_mode & 0o777 == 0o600  # its command line may carry credentials
    assert systemd.calls == [("daemon-reload",), ("enable", "--now", "ployzd")]


def test_under_systemd_an_unchanged_unit_is_only_made_sure_of(
        systemd: _Systemd, tmp_path: Path) -> None:
    daemon = _daemon(home=tmp_path / "home")
    daemons.start(daemon)
    systemd.calls.clear()
    daemons.start(daemon)
    assert systemd.calls == [("enable", "--now", "ployzd")]


def test_under_systemd_a_changed_unit_is_reloaded_and_restarted(
        systemd: _Systemd, tmp_path: Path) -> None:
    daemons.start(_daemon("/usr/bin/ployzd", "--old", home=tmp_path / "home"))
    systemd.calls.clear()
    changed = _daemon("/usr/bin/ployzd", "--new", home=tmp_path / "home")
    daemons.start(changed)
    assert (systemd.unit_dir / "ployzd.service").read_text() == unit_text(changed)
    assert systemd.calls == [("daemon-reload",), ("enable", "ployzd"), ("restart", "ployzd")]


def test_under_systemd_stop_disables_an_installed_unit_only(
        systemd: _Systemd, tmp_path: Path) -> None:
    daemon = _daemon(home=tmp_path / "home")
    daemons.stop(daemon)
    assert systemd.calls == []
    daemons.start(daemon)
    systemd.calls.clear()
    daemons.stop(daemon)
    assert systemd.calls == [("disable", "--now", "ployzd")]

