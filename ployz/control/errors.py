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


class ControlPlaneRefused(ControlPlaneError):
    """The store answered but refused the credentials: retrying cannot help."""


class ControlPlaneMoved(ControlPlaneError):
    """The store was sealed when the control plane moved to the cluster's replicated JetStream
    servers: it still answers reads, takes no write, and names where the control plane is now.
    Opening the control plane by the old URL follows the move, so running again succeeds."""


class ControlPlaneBusy(ControlPlaneError):
    """A compare-and-swap update lost the race too many times in a row."""


class NoCluster(ControlPlaneError, LookupError):
    def __init__(self) -> None:
        super().__init__("this control plane has no cluster: run `ployzctl machine init` first")


class ClusterExists(ControlPlaneError):
    """``create_cluster`` found another cluster (another name, or other trusted keys)."""

    def __init__(self, existing: str, why: str) -> None:
        super().__init__(f"this control plane already holds cluster {existing!r}: {why}")
        self.existing = existing


class MachineExists(ControlPlaneError):
    """The machine id is a member already, with another WireGuard key."""

    def __init__(self, machine_id: str, overlay_ip: str) -> None:
        super().__init__(
            f"machine {machine_id!r} is already a member (overlay {overlay_ip}) with another "
            f"WireGuard key: choose another id, or take the old one out first "
            f"(`ployzctl machine rm {machine_id}`)"
        )
        self.machine_id = machine_id


class DuplicateWireGuardKey(ControlPlaneError):
    def __init__(self, wireguard_key: str, holder: str) -> None:
        super().__init__(
            f"WireGuard key {wireguard_key} is already the key of machine {holder!r}: every "
            "machine needs a key of its own (a copied machine home shares its predecessor's)"
        )
        self.wireguard_key = wireguard_key
        self.holder = holder


class AddressesExhausted(ControlPlaneError):
    def __init__(self, cluster: str, what: str, network: str, allocated: int) -> None:
        super().__init__(
            f"cluster {cluster!r} has no free {what} left in {network} ({allocated} allocated): "
            "remove a machine first (`ployzctl machine rm MACHINE`)"
        )
        self.cluster = cluster
        self.network = network


class UnknownInvite(ControlPlaneError, LookupError):
    def __init__(self, invite_id: str) -> None:
        super().__init__(
            f"unknown invite {invite_id}: ask an operator for a new join token "
            "(`ployzctl machine invite`)"
        )
        self.invite_id = invite_id


class InviteUsed(ControlPlaneError):
    def __init__(self, invite_id: str, used_by: str, used_at: datetime) -> None:
        super().__init__(
            f"invite {invite_id} was used by machine {used_by!r} at "
            f"{used_at.isoformat(timespec='seconds')}: an invite admits one machine; ask for a "
            "new join token (`ployzctl machine invite`)"
        )
        self.invite_id = invite_id
        self.used_by = used_by
        self.used_at = used_at


class InviteExpired(ControlPlaneError):
    def __init__(self, invite_id: str, expires: datetime) -> None:
        super().__init__(
            f"invite {invite_id} expired at {expires.isoformat(timespec='seconds')}: ask for a "
            "new join token (`ployzctl machine invite`)"
        )
        self.invite_id = invite_id
        self.expires = expires


class MachineBusy(ControlPlaneError):
    """The machine still runs or holds something, or was not drained: removing it would leave
    services and volumes without a machine."""

    def __init__(self, machine_id: str, blockers: tuple[str, ...]) -> None:
        super().__init__(
            f"machine {machine_id!r} cannot be removed: {'; '.join(blockers)} (`ployzctl "
            f"machine rm {machine_id} --force` removes it anyway, leaving them without a machine)"
        )
        self.machine_id = machine_id
        self.blockers = blockers
