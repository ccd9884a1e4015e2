"""Typed errors of the control plane.

Every error names the fact it is about (machine id, namespace/service, lock name and holder) so the
caller can print it as is and the operator knows what to do. An operation that raises one of these
has changed nothing.
"""

from __future__ import annotations

from datetime import datetime


class ControlPlaneError(Exception):
    """Base class of every control-plane error."""


class InvalidName(ControlPlaneError, ValueError):
    """An identifier (machine id, namespace, service, volume, lock name) is malformed."""

    def __init__(self, kind: str, value: str, rule: str) -> None:
        super().__init__(f"invalid {kind} {value!r}: {rule}")
        self.kind = kind
        self.value = value


class InvalidControlPlaneUrl(ControlPlaneError, ValueError):
    """The control-plane URL has an unknown scheme or a malformed part."""


class UnknownMachine(ControlPlaneError, LookupError):
    def __init__(self, machine_id: str) -> None:
        super().__init__(f"unknown machine {machine_id!r} (see `ployzctl machine ls`)")
        self.machine_id = machine_id


class UnknownService(ControlPlaneError, LookupError):
    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"unknown service {namespace}/{name}")
        self.namespace = namespace
        self.name = name


class UnknownVolume(ControlPlaneError, LookupError):
    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"unknown volume {namespace}/{name}")
        self.namespace = namespace
        self.name = name


class UnknownDeploy(ControlPlaneError, LookupError):
    def __init__(self, deploy_id: str) -> None:
        super().__init__(f"unknown deploy {deploy_id!r}")
        self.deploy_id = deploy_id


class UnknownCommit(ControlPlaneError, LookupError):
    def __init__(self, namespace: str, seq: int) -> None:
        super().__init__(f"namespace {namespace!r} has no deploy commit #{seq}")
        self.namespace = namespace
        self.seq = seq


class LockHeld(ControlPlaneError):
    """The lease is held, unexpired, by another holder."""

    def __init__(self, name: str, holder: str, expires_at: datetime) -> None:
        super().__init__(
            f"lock {name!r} is held by {holder!r} until {expires_at.isoformat(timespec='seconds')}"
        )
        self.name = name
        self.holder = holder
        self.expires_at = expires_at


class StaleFencingToken(ControlPlaneError):
    """The fencing token is not the one of the lease's current, unexpired holder.

    Raised by commit, renew and release: whoever holds such a token has lost the lock (it
    expired, was released, or another holder acquired it since) and must not write.
    """

    def __init__(self, name: str, token: int, current: str) -> None:
        super().__init__(f"fencing token {token} is not current for lock {name!r}: {current}")
        self.name = name
        self.token = token


class InvalidArgument(ControlPlaneError, ValueError):
    """An argument is out of range (a non-positive TTL, a malformed value)."""


class InvalidChange(InvalidArgument):
    """A commit's change set is inconsistent (wrong namespace, evidence that does not match)."""


class InvalidDeployTransition(ControlPlaneError):
    def __init__(self, deploy_id: str, current: str, requested: str, why: str) -> None:
        super().__init__(f"deploy {deploy_id!r} cannot go from {current} to {requested}: {why}")
        self.deploy_id = deploy_id
        self.current = current
        self.requested = requested


class ControlPlaneUnavailable(ControlPlaneError):
    """The backing store did not answer in time (for NATS: no quorum, no server reachable)."""


class ControlPlaneBusy(ControlPlaneError):
    """A compare-and-swap update lost the race too many times in a row."""
