"""A private sshd for the ssh contender: its own config, host key, client key and port under a
temporary directory, run in debug mode (``-d``) so that it serves exactly one connection
without forking away, and its CPU is reaped with the rest of the receiving side."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

SSHD = "/usr/sbin/sshd"


AES_GCM = "aes128-gcm@openssh.com"


def fastest_cipher() -> str:
    """AES-GCM where the CPU has AES instructions (it then beats chacha20 severalfold);
    chacha20-poly1305 otherwise."""
    flags = Path("/proc/cpuinfo").read_text()
    return AES_GCM if " aes " in flags else "chacha20-poly1305@openssh.com"


def prepare(work: Path, listen_ip: str, port: int, cipher: str | None = None) -> Path:
    """Writes keys and an sshd config into ``work``; returns the config's path. ``cipher``
    (default: the fastest here) is the only one the server offers, so that a comparison names
    the cipher it measured rather than whatever the two ends negotiate."""
    work.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        if not (work / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(work / name)], check=True)
    # sshd refuses to start without its privilege-separation directory
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    # Sessions get an empty home. Otherwise the shell that runs each remote command sources
    # the user's ~/.bashrc, which may print to stderr. syncoid reads the first line of a remote
    # command's combined output as its answer (does the target exist?), so such a line makes it
    # start a full send onto an existing target.
    home = work / "home"
    home.mkdir(exist_ok=True)
    config = work / f"sshd_config_{port}"
    config.write_text("\n".join([
        f"ListenAddress {listen_ip}", f"Port {port}", f"HostKey {work / 'host_key'}",
        f"PidFile {work / f'sshd_{port}.pid'}", f"AuthorizedKeysFile {work / 'client_key.pub'}",
        f"SetEnv HOME={home}",
        "PermitRootLogin yes",
        "UsePAM yes",  # without PAM, root's locked password makes sshd call it invalid
        "StrictModes no", f"Ciphers {cipher or fastest_cipher()}", "Compression no", "",
    ]))
    return config


def server_command(config: Path) -> str:
    """sshd in debug mode exits 255 after its one connection even when all went well; the
    client's exit status and the delivered bytes are what say whether the copy worked."""
    return f"{SSHD} -d -f {config} || true"


def client_command(work: Path, host: str, port: int, remote: str,
                   cipher: str | None = None) -> str:
    """``ssh`` running ``remote`` on the private sshd; ``-v`` makes it report its wire bytes."""
    return (f"ssh -v -F /dev/null -i {work / 'client_key'} -p {port} "
            f"-c {cipher or fastest_cipher()} "
            f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes "
            f"-o Compression=no root@{host} '{remote}'")


def wire_bytes(client_stderr: str) -> int:
    """From ssh's closing line ``Transferred: sent N, received M bytes``."""
    for line in client_stderr.splitlines():
        if line.startswith("Transferred: sent "):
            return int(line.split()[2].rstrip(","))
    raise RuntimeError("ssh did not report its transferred bytes")


@contextlib.contextmanager
def daemon(work: Path, listen_ip: str, port: int) -> Iterator[Path]:
    """A long-running private sshd (for tools that open several connections, like syncoid);
    stopped on exit. Yields the directory holding the client key."""
    config = prepare(work, listen_ip, port)
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while f"{listen_ip}:{port} " not in subprocess.run(["ss", "-ltnH"], capture_output=True,
                                                          text=True).stdout:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start on {listen_ip}:{port}")
            time.sleep(0.1)
        yield work
    finally:
        server.terminate()
        server.wait()
