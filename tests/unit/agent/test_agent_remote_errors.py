"""remote_error: what the agent raised arrives as the same class, and still as an AgentError."""

from __future__ import annotations

import pytest

from ployz.agent.dispatch import MethodRegistry
from ployz.agent.errors import (
    AgentError,
    AuthRefused,
    BadParams,
    OutsidePool,
    RemoteError,
    UnknownTransfer,
    remote_error,
)
from ployz.runtime.errors import ContainerNotFound, RuntimeFailure
from ployz.transfer.errors import StaleResumeToken, TransferError
from ployz.zfs.errors import DatasetNotFound, ZFSError


@pytest.fixture
def registry() -> MethodRegistry:
    registry = MethodRegistry()
    registry.register_errors(ZFSError, lambda exc: {"errno": exc.errno, "name": exc.name})
    registry.register_errors(RuntimeFailure, lambda exc: exc.details())
    registry.register_errors(TransferError, lambda exc: {"message": str(exc)})
    return registry


def round_trip(registry: MethodRegistry, exc: BaseException) -> RemoteError:
    wire = registry.error_of(exc).to_wire()
    return remote_error(wire["code"], wire["message"], wire["details"])


def test_a_zfs_error_arrives_as_its_class_with_its_attributes(registry: MethodRegistry) -> None:
    error = round_trip(registry, DatasetNotFound(2, "tank/a", "dataset does not exist"))
    assert isinstance(error, DatasetNotFound) and isinstance(error, AgentError)
    assert (error.errno, error.name, error.message) == (2, "tank/a", "dataset does not exist")
    assert error.code == "zfs.DatasetNotFound"
    with pytest.raises(DatasetNotFound):
        raise error


def test_runtime_transfer_and_refusal_errors_arrive_as_their_classes(
        registry: MethodRegistry) -> None:
    assert isinstance(round_trip(registry, ContainerNotFound("web")), ContainerNotFound)
    stale = round_trip(registry, StaleResumeToken("the token is for another stream"))
    assert isinstance(stale, StaleResumeToken) and "another stream" in str(stale)
    unknown = round_trip(registry, UnknownTransfer("t1"))
    assert isinstance(unknown, UnknownTransfer) and unknown.code == "agent.unknown-transfer"
    outside = round_trip(registry, OutsidePool("other/x", "tank"))
    assert isinstance(outside, OutsidePool) and (outside.name, outside.pool) == ("other/x", "tank")


def test_codes_without_a_class_stay_plain_remote_errors() -> None:
    assert type(remote_error("zfs.NoSuchClass", "m", {})) is RemoteError
    assert type(remote_error("agent.no-such-refusal", "m", {})) is RemoteError
    assert type(remote_error("os.FileNotFoundError", "m", {})) is RemoteError
    assert isinstance(remote_error("auth.expired", "m", {}), AuthRefused)
    assert isinstance(remote_error("rpc.bad-params", "m", {}), BadParams)
