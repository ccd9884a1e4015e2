"""Validation of the service definition: bad input is refused with the offending field named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ployz.runtime.model import (
    Healthcheck,
    Mount,
    ServiceSpec,
    absolute_path,
    service_labels,
    unreserved_labels,
)

BASE = {"namespace": "shop", "service": "db", "deploy": "d-42", "image": "busybox:1"}


def errors_of(**overrides) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as excinfo:
        ServiceSpec(**{**BASE, **overrides})
    return [(e["loc"], e["msg"]) for e in excinfo.value.errors()]


def test_labels_tie_container_to_namespace_service_and_deploy():
    spec = ServiceSpec(**BASE, labels={"team": "storage"})
    assert spec.container_name == "ployz-shop-db-d-42"
    assert spec.all_labels() == {
        "team": "storage",
        "ployz.namespace": "shop",
        "ployz.service": "db",
        "ployz.deploy": "d-42",
    }
    assert service_labels("shop", "db").items() <= spec.all_labels().items()


def test_spec_round_trips_through_json():
    spec = ServiceSpec(
        **BASE,
        mounts=[Mount(source="/run/pool/shop/db", target="/data", read_only=True)],
        healthcheck=Healthcheck(test=["CMD-SHELL", "test -f /data/ok"]),
    )
    assert ServiceSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"namespace": "Shop"}, ("namespace",)),
        ({"service": "-db"}, ("service",)),
        ({"deploy": "a/b"}, ("deploy",)),
        ({"image": ""}, ("image",)),
        ({"restart": "sometimes"}, ("restart",)),
        ({"network": "bridge"}, ("network",)),
        ({"mounts": [{"source": "relative/dir", "target": "/data"}]}, ("mounts", 0, "source")),
        ({"mounts": [{"source": "/data/../etc", "target": "/data"}]}, ("mounts", 0, "source")),
        ({"mounts": [{"source": "/srv", "target": "data"}]}, ("mounts", 0, "target")),
        ({"healthcheck": {"test": ["true", "x"]}}, ("healthcheck", "test")),
        ({"healthcheck": {"test": ["CMD", "true"], "retries": 0}}, ("healthcheck", "retries")),
        ({"resources": {"memory_bytes": 1024}}, ("resources", "memory_bytes")),
        ({"resources": {"cpus": 0}}, ("resources", "cpus")),
        ({"unknown": 1}, ("unknown",)),
    ],
)
def test_invalid_fields_are_named(overrides, field):
    assert [loc for loc, _ in errors_of(**overrides)] == [field]


def test_reserved_label_prefix_is_refused():
    [(loc, message)] = errors_of(labels={"ployz.service": "other"})
    assert loc == ("labels",)
    assert "reserved" in message


@pytest.mark.parametrize("path", ["/", "/data", "/var/lib/db"])
def test_absolute_normalized_paths_pass(path: str) -> None:
    assert absolute_path(path) == path


@pytest.mark.parametrize("path", ["", "data", "./data", "/data/", "/data/../etc"])
def test_relative_or_unnormalized_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="absolute, normalized path"):
        absolute_path(path)


def test_only_ployz_labels_are_reserved() -> None:
    assert unreserved_labels({"team": "storage", "ployzish": "x"}) == {
        "team": "storage", "ployzish": "x"}
    with pytest.raises(ValueError, match=r"\['ployz\.a', 'ployz\.b'\]"):
        unreserved_labels({"ployz.b": "", "ployz.a": "", "team": ""})
