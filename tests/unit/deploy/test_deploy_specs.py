"""From a manifest service to its control-plane fact and back to the container it runs."""

from __future__ import annotations

import textwrap

from ployz.deploy.manifest import parse_manifest
from ployz.deploy.specs import (
    container_spec,
    dataset_name,
    http_route_of,
    service_fact,
    template_of,
    volume_mountpoint,
)
from ployz.runtime.model import Mount, ServiceAddress

MANIFEST = parse_manifest(textwrap.dedent("""
    namespace = "shop"
    [[volumes]]
    name = "db"
    owner = "machine-a"
    [[volumes]]
    name = "seed"
    mode = "ro"
    owner = "machine-a"
    [[services]]
    name = "db"
    placement = "machine-a"
    [services.template]
    image = "img:1"
    ports = [5432, 8080]
    command = ["sleep", "600"]
    env = { A = "1" }
    mounts = { db = "/data", seed = "/seed" }
    user = "nobody"
    labels = { team = "core" }
    readiness = { test = ["CMD", "true"] }
    resources = { cpus = 1.5 }
    [services.http]
    host = "DB.Example.com"
    port = 8080
"""), "deploy.toml")


def test_service_fact_keeps_the_whole_template():
    fact = service_fact("shop", MANIFEST.services[0])
    assert (fact.namespace, fact.name, fact.image, fact.machine) == (
        "shop", "db", "img:1", "machine-a")
    assert "image" not in fact.config
    assert template_of(fact) == MANIFEST.services[0].template
    assert fact.address is None  # given at the first deploy, not by the plan
    assert fact.http is not None and (fact.http.host, fact.http.port) == ("db.example.com", 8080)
    assert http_route_of(fact) == MANIFEST.services[0].http


def test_container_spec_mounts_volumes_with_their_mode_at_the_service_address():
    address = ServiceAddress(address="10.212.0.7", network="10.212.0.0/16")
    fact = service_fact("shop", MANIFEST.services[0], address)
    assert fact.address == "10.212.0.7"
    spec = container_spec(fact, "d1", {"db": "/pool/shop.db", "seed": "/pool/shop.seed"},
                          {"db": False, "seed": True}, address)
    assert spec.address == address
    assert spec.container_name == "ployz-shop-db-d1"
    assert spec.mounts == [Mount(source="/pool/shop.db", target="/data"),
                           Mount(source="/pool/shop.seed", target="/seed", read_only=True)]
    assert (spec.command, spec.env, spec.user, spec.labels) == (
        ["sleep", "600"], {"A": "1"}, "nobody", {"team": "core"})
    assert spec.healthcheck is not None and spec.healthcheck.test == ["CMD", "true"]
    assert spec.resources.cpus == 1.5


def test_datasets_sit_one_level_below_the_pool_and_under_its_mountpoint():
    dataset = dataset_name("machine-a", "shop", "db")
    assert dataset == "machine-a/shop.db"
    assert volume_mountpoint("/run/ployz/machine-a/pool/", dataset) == (
        "/run/ployz/machine-a/pool/shop.db")
    assert volume_mountpoint(None, dataset) == "/machine-a/shop.db"
