"""The files a membership leaves on the machine: who can read the credentials, and what the
agent's command line shows."""

from __future__ import annotations

import stat
from pathlib import Path

from ployz.deploy.membership.local import MachineConfig, MachineHome

URL = "nats://ployz:s3cret-password@10.0.0.1:4222"


def _config() -> MachineConfig:
    return MachineConfig(id="machine-a", cluster="ployz", pool="tank",
                         endpoint="10.0.0.1:51820", overlay_ip="10.210.0.1",
                         overlay="10.210.0.0/16", control=URL, trust=("ed25519:AAAA",))


def test_the_agent_reads_the_control_url_from_a_private_file(tmp_path: Path) -> None:
    home = MachineHome(tmp_path / "ployz")
    home.prepare()
    config = _config()
    home.save(config)
    argv = home.agent_daemon(config).argv
    assert not any("s3cret" in arg for arg in argv), argv
    assert argv[argv.index("--control-file") + 1] == str(home.control_file)
    assert home.control_file.read_text().strip() == URL
    for path in (home.control_file, home.config_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert home.load() == config


def test_the_membership_follows_the_control_file_the_agent_rewrote(tmp_path: Path) -> None:
    """After the control plane moved, the agent rewrote its control file: ``ployzctl`` on the
    machine, and a rebuilt agent unit, go where it went."""
    home = MachineHome(tmp_path / "ployz")
    home.prepare()
    config = _config()
    home.save(config)
    moved = "nats://ployz:s3cret-password@10.0.0.1:4223,ployz:s3cret-password@10.0.0.2:4223"
    home.control_file.write_text(moved + "\n")
    loaded = home.load()
    assert loaded is not None and loaded.control == moved
    assert home.agent_daemon(loaded).argv == home.agent_daemon(config).argv
