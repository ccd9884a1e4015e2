"""What the e2e tests do as the sandbox's operator: run ployzctl, call agents with the operator
key, and read the control plane's raw documents to prove that a refused command wrote nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from typing import Any

import nats

from ployz.agent.remote import RemoteAgent
from ployz.control import open_control_plane
from ployz.control.store import KINDS
from ployz.control.url import ca_of, nats_servers, open_store, tls_context
from ployz.deploy.membership.invitation import invite
from ployz.runtime.model import LABEL_NAMESPACE
from ployz.sandbox.cluster import Cluster, Machine
from ployz.transfer.keys import load_private_key
from tests.e2e.ployzctl_starter import StartedProcess, Starter

_starter: list[Starter] = []


def use_starter(starter: Starter) -> None:
    """The session's ployzctl starter (see :mod:`tests.e2e.ployzctl_starter`)."""
    _starter[:] = [starter]


def starter() -> Starter:
    if not _starter:
        raise RuntimeError("no ployzctl starter: the e2e session's cluster fixture makes it")
    return _starter[0]


def ployzctl(cluster: Cluster, *args: str, stdin: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
    """``ployzctl ARGS`` as the operator on machine-a, its output captured."""
    return starter().run(args, {**os.environ, **cluster.environment()}, input=stdin,
                         timeout=900)


def ployzctl_process(cluster: Cluster, *args: str) -> StartedProcess:
    """``ployzctl ARGS`` running in the background, read as it goes."""
    return starter().popen(args, {**os.environ, **cluster.environment()})


def dump(cluster: Cluster) -> list[tuple[Any, ...]]:
    """Every control-plane document with its revision, read through the store the control plane
    is on (NATS in the sandbox), but the machine facts that the agents' heartbeats rewrite every
    few seconds: equal dumps mean the command wrote nothing."""
    with open_control_plane(cluster.control_url) as cp:
        location = cp.location  # where the control plane is, also before the agents rewrote it
    store = open_store(location)
    try:
        return [(kind, key, doc.revision, doc.value)
                for kind in KINDS if kind != "machines"
                for key, doc in store.list(kind)]
    finally:
        store.close()


def members(cluster: Cluster) -> dict[str, tuple[str, str | None, str | None]]:
    """The machine facts' membership (overlay IP, WireGuard key, endpoint) without what the
    heartbeats rewrite: equal values mean nobody joined, left or re-keyed."""
    with open_control_plane(cluster.control_url) as cp:
        return {m.id: (m.overlay_ip, m.wireguard_key, m.endpoint) for m in cp.list_machines()}


def fresh_token(cluster: Cluster) -> str:
    """A join token made in this process, as ``machine invite`` makes it: for the joins that
    must be refused, which need a valid token but not another ployzctl start (tens of seconds
    under emulation; the joins that succeed take theirs from ``machine invite``)."""
    with open_control_plane(cluster.control_url) as cp:
        return invite(cp, load_private_key(cluster.operator_key), cluster.control_url)


def agent(cluster: Cluster, machine: Machine) -> RemoteAgent:
    """The machine's agent through the typed client the orchestrator uses."""
    return cluster.agent(machine)


def remove_services(cluster: Cluster) -> None:
    """Removes every service container on every machine. A test's services are its own, but
    they would run on: a writer syncs twenty times a second, and under emulation a few of them
    left running slow every later test."""
    for machine in (m for m in cluster.machines if m.docker):
        with agent(cluster, machine) as client:
            for container in client.containers.list({LABEL_NAMESPACE: None}):
                client.containers.remove(container.name, force=True)


@dataclass(frozen=True)
class BucketPlacement:
    """Where JetStream keeps one control-plane bucket: its configured replicas, the server
    leading it and the followers that are current."""

    replicas: int
    leader: str
    current: frozenset[str]


def bucket_placement(cluster: Cluster, kind: str) -> BucketPlacement:
    """Asked of the servers the control URL names (server names are machine ids)."""
    async def ask() -> BucketPlacement:
        ca = ca_of(cluster.control_url)
        nc = await nats.connect(servers=nats_servers(cluster.control_url), connect_timeout=5,
                                tls=tls_context(ca) if ca is not None else None)
        try:
            info = await nc.jetstream(timeout=10).stream_info(f"KV_ployz-{kind}")
        finally:
            await nc.close()
        assert info.cluster is not None and info.cluster.leader is not None
        return BucketPlacement(info.config.num_replicas or 1, info.cluster.leader,
                               frozenset(p.name for p in info.cluster.replicas or [] if p.current))

    return asyncio.run(ask())
