"""What the e2e tests do as the sandbox's operator: run ployzctl, call agents with the operator
key, and read the control plane's raw documents to prove that a refused command wrote nothing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from typing import Any

from ployz.agent.remote import RemoteAgent
from ployz.runtime.model import LABEL_NAMESPACE
from ployz.sandbox.cluster import Cluster, Machine


def ployzctl(cluster: Cluster, *args: str, stdin: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ployzctl", *args], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **cluster.environment()}, timeout=900, check=False)


def dump(cluster: Cluster) -> list[tuple[Any, ...]]:
    """Every control-plane document with its revision, but the machine facts that the agents'
    heartbeats rewrite every few seconds: equal dumps mean the command wrote nothing."""
    with sqlite3.connect(cluster.control_url.removeprefix("sqlite:///")) as db:
        return db.execute("SELECT kind, key, revision, value FROM documents "
                          "WHERE kind != 'machines' ORDER BY kind, key").fetchall()


def agent(cluster: Cluster, machine: Machine) -> RemoteAgent:
    """The machine's agent through the typed client the orchestrator uses."""
    return cluster.agent(machine)


def remove_services(cluster: Cluster) -> None:
    """Removes every service container on every machine. A test's services are its own, but
    they would run on: a writer syncs twenty times a second, and under emulation a few of them
    left running slow every later test."""
    for machine in cluster.machines:
        with agent(cluster, machine) as client:
            for container in client.containers.list({LABEL_NAMESPACE: None}):
                client.containers.remove(container.name, force=True)
