"""MethodRegistry: parameters validated from signatures, results made JSON, errors mapped."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

from ployz.agent.dispatch import CallRefused, MethodRegistry, to_wire
from ployz.agent.errors import OutsidePool
from ployz.zfs.errors import DatasetBusy, ZFSError


class Volume(BaseModel):
    name: str
    quota: int


@dataclass(frozen=True)
class Snap:
    name: str
    guid: int


def create(volume: Volume, mountpoint: str | None = None) -> dict:
    return {"volume": volume, "mountpoint": mountpoint}


def snapshots(dataset: str) -> list[Snap]:
    return [Snap(f"{dataset}@a", 1), Snap(f"{dataset}@b", 2)]


async def ping() -> str:
    return "pong"


@pytest.fixture
def registry() -> MethodRegistry:
    registry = MethodRegistry()
    registry.register("vol.create", create, mutating=True)
    registry.register("vol.snapshots", snapshots, mutating=False)
    registry.register("agent.ping", ping, mutating=False)
    registry.register_errors(ZFSError, lambda exc: {"errno": exc.errno, "name": exc.name})
    return registry


def invoke(registry: MethodRegistry, name: str, params: dict):
    with ThreadPoolExecutor(1) as executor:
        return asyncio.run(registry.run(registry.bind(name, params), executor))


def test_parameters_are_validated_into_their_types(registry):
    result = invoke(registry, "vol.create", {"volume": {"name": "v", "quota": "1024"}})
    assert result == {"volume": {"name": "v", "quota": 1024}, "mountpoint": None}
    assert registry.bind("vol.create", {"volume": {"name": "v", "quota": 1}}).method.mutating


def test_sync_and_async_methods_return_wire_data(registry):
    assert invoke(registry, "vol.snapshots", {"dataset": "t/v"}) == [
        {"name": "t/v@a", "guid": 1},
        {"name": "t/v@b", "guid": 2},
    ]
    assert invoke(registry, "agent.ping", {}) == "pong"


def test_bad_parameters_list_every_field(registry):
    with pytest.raises(CallRefused) as excinfo:
        registry.bind("vol.create", {"volume": {"name": "v"}, "extra": 1, "mountpoint": 3})
    error = excinfo.value.error
    assert error.code == "rpc.bad-params"
    assert [e["field"] for e in error.details["errors"]] == [
        "volume.quota", "mountpoint", "extra"
    ]


def test_unknown_method_is_refused(registry):
    with pytest.raises(CallRefused) as excinfo:
        registry.bind("vol.format", {})
    assert excinfo.value.error.code == "rpc.unknown-method"


def test_errors_map_to_their_family_most_specific_class(registry):
    error = registry.error_of(DatasetBusy(16, "t/v@a", "busy"))
    assert (error.code, error.message, error.details) == (
        "zfs.DatasetBusy", "t/v@a: busy", {"errno": 16, "name": "t/v@a"}
    )
    refusal = registry.error_of(OutsidePool("x/y", "t"))
    assert refusal.code == "agent.outside-pool" and refusal.details == {"name": "x/y", "pool": "t"}
    environment = registry.error_of(FileNotFoundError(2, "No such file", "/run/x"))
    assert environment.code == "os.FileNotFoundError"
    assert environment.details == {"errno": 2, "path": "/run/x"}
    bug = registry.error_of(KeyError("oops"))
    assert bug.code == "internal" and "KeyError" in bug.message


def test_only_the_protocol_s_error_families_register(registry):
    with pytest.raises(ValueError, match="not an error family"):
        registry.register_errors(LookupError, lambda exc: {})


def test_a_name_registers_once(registry):
    with pytest.raises(ValueError, match="already registered"):
        registry.register("vol.create", create, mutating=True)


def test_positional_only_parameters_are_rejected_at_registration(registry):
    def odd(a, /):
        return a

    with pytest.raises(TypeError, match="must be a named one"):
        registry.register("odd", odd, mutating=False)


def test_results_that_json_cannot_carry_are_a_bug():
    with pytest.raises(TypeError, match="bytes"):
        to_wire({"raw": b"\x00"})


def test_methods_describe_themselves(registry):
    described = registry.describe()
    assert list(described) == ["agent.ping", "vol.create", "vol.snapshots"]
    create = described["vol.create"]
    assert create["mutating"] is True
    assert create["params"]["required"] == ["volume"]
    assert set(create["params"]["properties"]) == {"volume", "mountpoint"}
    assert described["vol.snapshots"]["mutating"] is False
