"""Containers at their service's stable address, on the service bridge of a real Docker daemon:
each answers at its own address, two of them on one port; the bridge is made once, and a bridge
for another range is refused with what to do."""

from __future__ import annotations

import time
import urllib.request

import docker
import pytest

from ployz.runtime.docker_runtime import SERVICE_NETWORK
from ployz.runtime.errors import DockerRequestFailed
from ployz.runtime.model import ServiceAddress, ServiceSpec, service_labels

pytestmark = pytest.mark.host

RANGE = "10.212.0.0/16"






def web(dockerd, namespace: str, service: str, address: str, text: str) -> ServiceSpec:
    """busybox httpd on port 8080, serving ``text`` at /id."""
    script = f"mkdir -p /www && echo {text} > /www/id && exec httpd -f -p 8080 -h /www"
    return ServiceSpec(namespace=namespace, service=service, deploy="d1", image=dockerd.image,
                       command=["sh", "-c", script],
                       address=ServiceAddress(address=address, network=RANGE))


def fetch(url: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode().strip()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_two_services_on_one_port_each_answer_at_their_own_address(dockerd, runtime,
                                                                    namespace):
    for service, address in (("one", "10.212.0.11"), ("two", "10.212.0.12")):
        runtime.create(web(dockerd, namespace, service, address, service))
        runtime.start(f"ployz-{namespace}-{service}-d1")
    # This machine holds the bridge's first address, so it reaches both directly.
    assert fetch("http://10.212.0.11:8080/id") == "one"
    assert fetch("http://10.212.0.12:8080/id") == "two"
    client = docker.DockerClient(base_url=f"unix://{dockerd.socket}")
    try:
        (network,) = client.networks.list(names=[SERVICE_NETWORK])
        assert network.attrs["IPAM"]["Config"][0]["Subnet"] == RANGE
        assert network.attrs["Options"]["com.docker.network.bridge.enable_ip_masquerade"] == (
            "false")
    finally:
        client.close()


def test_a_bridge_for_another_range_is_refused_with_what_to_do(dockerd, runtime, namespace):
    runtime.create(web(dockerd, namespace, "one", "10.212.0.13", "one"))  # the bridge exists
    other = web(dockerd, namespace, "two", "10.99.0.13", "two").model_copy(
        update={"address": ServiceAddress(address="10.99.0.13", network="10.99.0.0/16")})
    with pytest.raises(DockerRequestFailed) as refused:
        runtime.create(other)
    assert f"network {SERVICE_NETWORK} exists for ['{RANGE}']" in str(refused.value)
    assert "docker network rm" in str(refused.value)
    assert [c.name for c in runtime.list(service_labels(namespace))] == [
        f"ployz-{namespace}-one-d1"]
