"""The ZFS suite's contenders, each a ``Pipeline`` for the data-path suite's runner. Peers run
in their local mode (both pools on one machine): under emulation ssh moves a few MB/s, so
ssh-based transports are compared on the host (``bench.datapath``) and syncoid over ssh only on
the small jobs, where its fixed costs are what it shows."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.datapath.contenders import engine_keys, peer_command
from bench.datapath.pipeline import Pipeline
from bench.zfs_peers.pools import DST, Job, release_holds

SSH_PORT = 42022


@dataclass(frozen=True)
class Run:
    job: Job
    target: str  # the destination dataset this run creates or updates
    work: Path
    port: int


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    role: str  # "ours", "ceiling" or "peer"
    pipeline: Callable[[Run], Pipeline]
    target: Callable[[Job], str] = lambda job: f"{DST}/{job.name}"
    skip: dict[str, str] = field(default_factory=dict)  # job name -> why it is not run
    before: Callable[[Run], None] = lambda run: None
    after: Callable[[Run], None] = lambda run: None
    engine: bool = False  # our engine's peers: they report start-up CPU and a summary


def incremental(run: Run) -> str:
    return f"-i {run.job.base} " if run.job.base else ""


def ployz(codec: str) -> Contender:
    def pipeline(run: Run) -> Pipeline:
        private, public = engine_keys(run.work)
        where = f"127.0.0.1:{run.port}"
        base = [run.job.base] if run.job.base else []
        return Pipeline(send=peer_command("send", where, private, f"zfs:{run.job.snapshot}",
                                          codec, *base),
                        receive=peer_command("receive", where, public, f"zfs:{run.target}"),
                        port=run.port, handshake=True)

    return Contender(f"ployz_{codec}", f"ployz engine (codec {codec}), pool to pool over "
                     "loopback", "ours", pipeline, engine=True)


def zfs_pipe(middle: str) -> Callable[[Run], Pipeline]:
    def pipeline(run: Run) -> Pipeline:
        return Pipeline(send=f"zfs send {incremental(run)}{run.job.snapshot} | {middle}"
                             f"zfs receive -u -F {run.target}")
    return pipeline


def syncoid(options: str, over_ssh: bool = False) -> Callable[[Run], Pipeline]:
    """``--no-sync-snap`` so that syncoid sends the suite's snapshots rather than one of its
    own (same data either way). Over ssh it talks to the suite's sshd on ``SSH_PORT``."""
    def pipeline(run: Run) -> Pipeline:
        where = run.target
        if over_ssh:
            options_ssh = (f"--sshport={SSH_PORT} --sshkey={run.work / 'sshd' / 'client_key'} "
                           "--sshoption=StrictHostKeyChecking=no "
                           "--sshoption=UserKnownHostsFile=/dev/null ")
            where = f"root@127.0.0.1:{run.target}"
        else:
            options_ssh = ""
        return Pipeline(send=f"syncoid --no-sync-snap --no-privilege-elevation {options_ssh}"
                             f"{options} {run.job.dataset} {where}")
    return pipeline


def bzfs(options: str) -> Callable[[Run], Pipeline]:
    def pipeline(run: Run) -> Pipeline:
        logs = run.work / "bzfs-logs"
        # bzfs may report a failure only in its log file: its tail becomes the error
        return Pipeline(send=f"bzfs {run.job.dataset} {run.target} --log-dir={logs} {options}"
                             f" || {{ status=$?; find {logs} -name '*.log' -exec tail -n 3 {{}} +"
                             " >&2; exit $status; }")
    return pipeline


AUTOBACKUP = "pzbench"


def autobackup_mark(run: Run) -> None:
    subprocess.run(["zfs", "set", f"autobackup:{AUTOBACKUP}=true", run.job.dataset], check=True)


def autobackup_unmark(run: Run) -> None:
    """Drops the property and the snapshots zfs-autobackup made on the source, so the next job
    and the next contender see the source as it was."""
    subprocess.run(["zfs", "inherit", f"autobackup:{AUTOBACKUP}", run.job.dataset], check=True)
    names = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot",
                            run.job.dataset], capture_output=True, text=True).stdout.split()
    for name in names:
        if name.split("@")[1].startswith(AUTOBACKUP):
            release_holds(name)
            subprocess.run(["zfs", "destroy", name], check=True)


def autobackup(options: str) -> Callable[[Run], Pipeline]:
    def pipeline(run: Run) -> Pipeline:
        return Pipeline(send=f"zfs-autobackup {options} {AUTOBACKUP} {DST}/ab")
    return pipeline


LARGE, SMALL = ("incompressible", "compressible"), ("incremental", "tiny")
AUTOBACKUP_SKIP = {"incremental": "zfs-autobackup sends only snapshots it made itself, so it "
                                  "cannot start from the suite's base snapshot"}
SSH_SKIP = {name: "ssh under software emulation moves a few MB/s; ssh transports are "
                  "compared on the host (host data path) instead" for name in LARGE}
# each command costs about a second under emulation: the fastest settings change per-byte
# costs, so they run where bytes dominate, and the fixed costs come from the defaults
FAST_SKIP = {name: "fastest settings are measured on the large snapshots; fixed costs with "
                   "the defaults" for name in SMALL}

CONTENDERS: tuple[Contender, ...] = (
    ployz("auto"), ployz("none"), ployz("zstd"),
    Contender("zfs_pipe", "zfs send | zfs recv (local ceiling)", "ceiling", zfs_pipe("")),
    Contender("zfs_mbuffer", "zfs send | mbuffer -m 128M | zfs recv", "peer",
              zfs_pipe("mbuffer -q -m 128M 2>/dev/null | ")),
    Contender("syncoid", "syncoid, local, defaults", "peer", syncoid("")),
    Contender("syncoid_fast", "syncoid, local, --no-stream --mbuffer-size=128M --quiet", "peer",
              syncoid("--no-stream --mbuffer-size=128M --quiet"), skip=FAST_SKIP),
    Contender("syncoid_ssh", "syncoid over ssh to localhost, defaults", "peer",
              syncoid("", over_ssh=True), skip=SSH_SKIP),
    Contender("syncoid_ssh_fast", "syncoid over ssh to localhost, --compress=none "
              "--sshcipher=aes128-gcm@openssh.com", "peer",
              syncoid("--compress=none --sshcipher=aes128-gcm@openssh.com --quiet",
                      over_ssh=True), skip={**SSH_SKIP, "tiny": FAST_SKIP["tiny"]}),
    Contender("bzfs", "bzfs, local, defaults", "peer", bzfs("")),
    Contender("bzfs_fast", "bzfs, local, no pv, no compression", "peer",
              bzfs("--pv-program=- --compression-program=-"), skip=FAST_SKIP),
    Contender("autobackup", "zfs-autobackup, local, defaults", "peer", autobackup(""),
              target=lambda job: f"{DST}/ab/{job.dataset}", skip=AUTOBACKUP_SKIP,
              before=autobackup_mark, after=autobackup_unmark),
    Contender("autobackup_fast", "zfs-autobackup, local, --buffer 128M --no-progress", "peer",
              autobackup("--buffer 128M --no-progress"),
              target=lambda job: f"{DST}/ab/{job.dataset}", skip={**AUTOBACKUP_SKIP, **FAST_SKIP},
              before=autobackup_mark, after=autobackup_unmark),
)
