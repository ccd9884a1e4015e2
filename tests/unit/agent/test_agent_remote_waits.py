"""How long a remote agent's caller waits for each answer: never less than the agent itself
may take. A container start that took 30 s under a parallel drain's load was given up as an
unreachable agent while the agent, bounded by the container engine's 60 s, still ran it."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.client import DEFAULT_TIMEOUT_S, AgentClient
from ployz.agent.remote import RemoteAgent
from ployz.runtime.model import REQUEST_TIMEOUT_S, STOP_TIMEOUT_S, ServiceSpec

CONTAINER = {"id": "c1", "name": "ployz-shop-web-d1", "image": "img:1", "state": "running",
             "health": None, "exit_code": None, "labels": {}, "mounts": [], "started_at": None}


class RecordingClient(AgentClient):
    """Answers every call with what its method returns when it succeeds, and records how long
    the caller said it would wait."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:7070", Ed25519PrivateKey.generate(), "machine-a")
        self.waits: dict[str, float] = {}

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             timeout_s: float | None = None) -> Any:
        self.waits[method] = timeout_s or DEFAULT_TIMEOUT_S
        answers: dict[str, Any] = {"container.list": [], "container.has_image": True,
                                   "container.remove": None}
        return answers.get(method, CONTAINER)


def test_every_container_call_waits_past_the_agents_own_bound() -> None:
    client = RecordingClient()
    containers = RemoteAgent(client).containers
    spec = ServiceSpec(namespace="shop", service="web", deploy="d1", image="img:1")
    containers.has_image("img:1")
    containers.create(spec)
    containers.start(spec.container_name)
    containers.inspect(spec.container_name)
    containers.list({"ployz.namespace": "shop"})
    containers.stop(spec.container_name)
    containers.remove(spec.container_name)
    assert set(client.waits) == {"container.has_image", "container.create", "container.start",
                                 "container.inspect", "container.list", "container.stop",
                                 "container.remove"}
    for method, wait in client.waits.items():
        bound = REQUEST_TIMEOUT_S + (STOP_TIMEOUT_S if method == "container.stop" else 0.0)
        assert wait > bound, method
        assert wait > DEFAULT_TIMEOUT_S, method
