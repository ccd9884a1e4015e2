"""ZFS RPCs on a host without ZFS: dispatch, pool confinement and error mapping.

The ZFS operations themselves are tested against real pools in the VM (tests/zfs); here the
agent must refuse bad calls before touching ZFS and relay ZFS's own errors as typed remote errors.
"""

from __future__ import annotations

import pytest

from ployz.agent.errors import BadParams, RemoteError, UnknownMethod

pytestmark = pytest.mark.host


def remote_error(client, method, params):
    with pytest.raises(RemoteError) as excinfo:
        client.call(method, params)
    return excinfo.value


def test_zfs_errors_are_relayed_typed(agent):
    error = remote_error(agent.client(), "zfs.snapshot", {"snapshots": ["tank/vol@move-1"]})
    assert error.code == "zfs.ZFSUnavailable"
    assert error.details["name"] == "/dev/zfs"
    assert "modprobe zfs" in error.message


def test_capacity_without_zfs_is_a_typed_error_but_health_still_answers(agent):
    client = agent.client()
    assert remote_error(client, "zfs.capacity", {}).code == "zfs.ZFSUnavailable"
    health = client.call("agent.health")
    assert health["pool"] == "tank" and health["pool_free"] is None
    assert any(problem.startswith("zfs:") for problem in health["problems"])


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("zfs.destroy", {"dataset": "rpool/ROOT"}),
        ("zfs.snapshot", {"snapshots": ["tank/ok@s", "tankx/evil@s"]}),
        ("zfs.hold", {"holds": {"other/vol@s": "ployz-move"}}),
        ("zfs.send_space", {"snapshot": "tank/vol@two", "base": "other/vol#one"}),
    ],
)
def test_names_outside_the_pool_are_refused(agent, method, params):
    error = remote_error(agent.client(), method, params)
    assert error.code == "agent.outside-pool"
    assert error.details["pool"] == "tank"


def test_agent_without_pool_refuses_zfs_calls(start_agent, dockerd):
    agent = start_agent("--docker-socket", dockerd.socket)
    error = remote_error(agent.client(), "zfs.exists", {"name": "tank/vol"})
    assert error.code == "agent.no-pool"


def test_bad_parameters_name_each_field(agent):
    with pytest.raises(BadParams) as excinfo:
        agent.client().call("zfs.create", {"dataset": "tank/v", "quota": "lots", "colour": 1})
    assert {e["field"] for e in excinfo.value.details["errors"]} == {"quota", "colour"}


def test_unknown_method(agent):
    with pytest.raises(UnknownMethod) as excinfo:
        agent.client().call("zfs.format_disk", {})
    assert excinfo.value.details == {"method": "zfs.format_disk"}
