"""What a member machine keeps on its own disk: its identity, keys and how to reach the cluster.

``machine init`` and ``machine join`` write it under the machine's home (``/var/lib/ployz``, or
``--home``/``$PLOYZ_HOME``); the agent's command line and the NATS server's configuration follow
from it, so a second ``init`` or ``join`` rebuilds exactly the same daemons (idempotent), and
``ployzctl`` on the machine finds the control plane and the operator key without flags.

The file holds the control-plane URL, which for NATS carries the cluster's credentials: it is
written with mode 0600, as are the keys.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ployz.control.models import Endpoint, Identifier
from ployz.deploy.agents import DEFAULT_AGENT_PORT
from ployz.deploy.membership.certificates import TlsFiles
from ployz.deploy.membership.daemons import Daemon
from ployz.deploy.membership.errors import MembershipError
from ployz.net.keys import generate_private_key, read_private_key, write_private_key
from ployz.private_files import write_private

HOME_ENV = "PLOYZ_HOME"
DEFAULT_HOME = Path("/var/lib/ployz")
CONFIG_NAME = "machine.json"
WIREGUARD_INTERFACE = "ployz0"
WIREGUARD_PORT = 51820
AGENT_DAEMON = "ployzd"
NATS_DAEMON = "ployz-nats"
REPLICA_DAEMON = "ployz-nats-replica"
GATEWAY_DAEMON = "ployz-gateway"

ControlKind = Literal["sqlite", "nats"]


def machine_home(explicit: Path | None = None) -> Path:
    """``explicit``, else ``$PLOYZ_HOME``, else ``/var/lib/ployz``."""
    if explicit is not None:
        return explicit
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME)


class MachineConfig(BaseModel):
    """This machine's membership, as ``init`` or ``join`` made it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Identifier
    cluster: Identifier
    pool: str = Field(min_length=1)
    endpoint: Endpoint
    overlay_ip: str
    overlay: str
    control: str = Field(min_length=1)
    trust: tuple[str, ...]
    docker_socket: str | None = None
    agent_port: int = DEFAULT_AGENT_PORT
    wireguard_interface: str = WIREGUARD_INTERFACE
    nats: bool = False
    """Whether this machine runs one of the cluster's JetStream servers."""


class MachineHome:
    """The files of one machine's membership under its home directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def operator_key(self) -> Path:
        return self.root / "operator.key"

    @property
    def wireguard_key(self) -> Path:
        return self.root / "wireguard.key"

    @property
    def control_db(self) -> Path:
        return self.root / "control.db"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"

    @property
    def nats_tls(self) -> TlsFiles:
        """The CA certificate and this machine's JetStream server certificate (and, on the
        first machine, the CA's key)."""
        return TlsFiles(self.nats_dir / "tls")

    @property
    def agent_state(self) -> Path:
        return self.root / "agent"

    def wireguard_private_key(self) -> str:
        """The machine's WireGuard private key, made at the first call and kept."""
        if not self.wireguard_key.exists():
            write_private_key(self.wireguard_key, generate_private_key())
        return read_private_key(self.wireguard_key)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)

    def load(self) -> MachineConfig | None:
        """The saved membership, or None when this machine has not joined a cluster. Its
        control URL is the control file's: the agent rewrites that file when the control plane
        moves (to the replicated JetStream servers), so ``ployzctl`` follows the agent."""
        try:
            text = self.config_path.read_text()
        except FileNotFoundError:
            return None
        config = MachineConfig.model_validate_json(text)
        try:
            control = self.control_file.read_text().strip()
        except FileNotFoundError:
            return config
        return config.model_copy(update={"control": control}) if control else config

    @property
    def control_file(self) -> Path:
        """The control-plane URL alone, which the agent reads: on its command line the NATS
        credentials in it would show to every local user."""
        return self.root / "control.url"

    def save(self, config: MachineConfig) -> None:
        """The membership, then the agent's control file from it."""
        write_private(self.config_path, config.model_dump_json(indent=2) + "\n")
        write_private(self.control_file, config.control + "\n")

    @property
    def nats_config(self) -> Path:
        return self.nats_dir / "nats-server.conf"

    @property
    def replica_config(self) -> Path:
        return self.nats_dir / "replica.conf"

    def nats_daemon(self) -> Daemon:
        """The first machine's single JetStream server, on the configuration ``init`` wrote."""
        return self._nats_daemon(NATS_DAEMON, self.nats_config,
                                 "ployz control plane (NATS JetStream, single server)")

    def replica_daemon(self) -> Daemon:
        """This machine's server of the replicated JetStream cluster (the first three machines
        each run one)."""
        return self._nats_daemon(REPLICA_DAEMON, self.replica_config,
                                 "ployz control plane (NATS JetStream, replicated)")

    def _nats_daemon(self, name: str, config: Path, description: str) -> Daemon:
        binary = shutil.which("nats-server", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
        if binary is None:
            raise MembershipError("nats-server is not installed (Debian package nats-server)")
        return Daemon(name=name, argv=(binary, "-c", str(config)), home=self.root,
                      description=description)

    @property
    def gateway_dir(self) -> Path:
        return self.root / "gateway"

    @property
    def gateway_config(self) -> Path:
        return self.gateway_dir / "haproxy.cfg"

    @property
    def gateway_socket(self) -> Path:
        return self.gateway_dir / "runtime.sock"

    @property
    def gateway_map(self) -> Path:
        return self.gateway_dir / "hosts.map"

    def gateway_daemon(self) -> Daemon:
        """The machine's HTTP gateway, HAProxy on the configuration ``init``/``join`` wrote."""
        binary = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
        if binary is None:
            raise MembershipError("haproxy is not installed (Debian package haproxy): every "
                                  "machine runs the cluster's HTTP gateway")
        return Daemon(name=GATEWAY_DAEMON, argv=(binary, "-W", "-db", "-f",
                                                 str(self.gateway_config)),
                      home=self.root, description="ployz gateway (HAProxy)")

    def agent_daemon(self, config: MachineConfig) -> Daemon:
        """The agent's command line: everything it needs comes from the membership, so the same
        membership always gives the same unit."""
        prefix = config.overlay.rsplit("/", 1)[1]
        argv = [
            sys.executable, "-m", "ployz.agent.daemon",
            "--machine-id", config.id,
            "--listen", f"{config.overlay_ip}:{config.agent_port}",
            *(arg for key in config.trust for arg in ("--trust", key)),
            "--state-dir", str(self.agent_state),
            "--pool", config.pool,
            "--control-file", str(self.control_file),
            "--wireguard", config.wireguard_interface,
            "--wireguard-key", str(self.wireguard_key),
            "--wireguard-port", config.endpoint.rsplit(":", 1)[1],
            "--overlay", f"{config.overlay_ip}/{prefix}",
            "--gateway-socket", str(self.gateway_socket),
            "--gateway-map", str(self.gateway_map),
        ]
        if config.docker_socket:
            argv += ["--docker-socket", config.docker_socket]
        return Daemon(name=AGENT_DAEMON, argv=tuple(argv), home=self.root,
                      description=f"ployz agent of machine {config.id}")
