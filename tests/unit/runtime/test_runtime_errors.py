"""Runtime errors say what happened and carry the fields the agent relays."""

from __future__ import annotations

from ployz.runtime.errors import ContainerExited, DaemonUnreachable, MountSourceMissing


def test_exit_status_or_restart_is_stated():
    exited = ContainerExited("ployz-a-b-1", 3, "bad config\n")
    assert "exited with 3" in str(exited) and "bad config" in str(exited)
    restarted = ContainerExited("ployz-a-b-1", None, "")
    assert "crashed and was restarted" in str(restarted) and "(none)" in str(restarted)
    assert restarted.details() == {"container": "ployz-a-b-1", "exit_code": None, "log_tail": ""}


def test_unreachable_daemon_and_missing_mount_name_the_path():
    unreachable = DaemonUnreachable("/run/m1/docker.sock", "connection refused")
    assert "/run/m1/docker.sock" in str(unreachable)
    assert unreachable.details() == {"socket": "/run/m1/docker.sock"}
    missing = MountSourceMissing("/run/p1/shop/db")
    assert "is its dataset mounted" in str(missing)
    assert missing.details() == {"source": "/run/p1/shop/db"}
