"""Typed errors of deploys: each names the manifest field, machine or volume it is about.

Everything raised before the apply phase (:class:`ManifestError`, :class:`PlanError`) is raised
before any mutation, so the caller can say "nothing was changed". :class:`DeployFailed` says what
the failed deploy left behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from ployz.transfer.units import format_size


class DeployError(Exception):
    """Base of every error of :mod:`ployz.deploy`."""


@dataclass(frozen=True)
class Issue:
    """One problem of a manifest: the field path (``services[0].template.image``) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestError(DeployError):
    """The manifest cannot be read or is invalid; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: list[Issue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"{source}: invalid deploy manifest:\n{lines}")


class PlanError(DeployError):
    """The manifest is valid but cannot be deployed on the cluster as it is now."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class UnknownPlacement(PlanError):
    """The manifest names a machine the control plane does not know."""

    def __init__(self, path: str, machine: str, known: list[str]) -> None:
        self.machine = machine
        names = ", ".join(known) or "none"
        super().__init__(path, f"unknown machine {machine!r} (known machines: {names})")


class MachineDraining(PlanError):
    """The manifest places something new on a machine that is being drained."""

    def __init__(self, path: str, machine: str) -> None:
        self.machine = machine
        super().__init__(
            path, f"machine {machine!r} is draining and takes no new placements; pick another"
        )


class MachineSilent(PlanError):
    """A machine that would receive work has never heartbeated: its agent may not run, and its
    pool's free space is unknown."""

    def __init__(self, path: str, machine: str) -> None:
        self.machine = machine
        super().__init__(
            path, f"machine {machine!r} has never sent a heartbeat: is its agent running?"
        )


class InsufficientCapacity(PlanError):
    """The volumes to create on a machine need more than its pool has free."""

    def __init__(self, machine: str, needed: int, free: int, volumes: list[str]) -> None:
        self.machine = machine
        self.needed = needed
        self.free = free
        super().__init__(
            "volumes",
            f"machine {machine!r} has {format_size(free)} ({free} bytes) free in its pool, the "
            f"new volumes {', '.join(volumes)} reserve {format_size(needed)} ({needed} bytes) "
            "of quota; lower the quotas or place them on another machine",
        )


class VolumeOwnerConflict(PlanError):
    """A volume exists on another machine than the manifest says, without a move intent."""

    def __init__(self, path: str, volume: str, owner: str, wanted: str) -> None:
        self.volume = volume
        super().__init__(
            path,
            f"volume {volume!r} is owned by {owner!r}, the manifest puts it on {wanted!r}: moving "
            f"data needs `intent.volumes.{volume}.move` (see `ployzctl migrate`)",
        )


class MoveSourceMismatch(PlanError):
    """A move intent names a source machine that does not own the volume."""

    def __init__(self, path: str, volume: str, source: str, owner: str | None) -> None:
        self.volume = volume
        where = f"owned by {owner!r}" if owner else "not created yet"
        super().__init__(
            path, f"moves volume {volume!r} from {source!r}, but the volume is {where}"
        )


class QuotaChangeUnsupported(PlanError):
    """An existing volume's quota differs from the manifest's."""

    def __init__(self, path: str, volume: str, current: int | None, wanted: int | None) -> None:
        self.volume = volume
        super().__init__(
            path,
            f"volume {volume!r} exists with quota {current}; changing it to {wanted} is not "
            "supported by deploy (keep the current quota in the manifest)",
        )


class NotADnsLabel(PlanError):
    """A name every machine's DNS must answer (``<service>.<namespace>.ployz.internal``) is
    not a DNS label."""

    def __init__(self, path: str, what: str, name: str) -> None:
        self.name = name
        super().__init__(
            path, f"{what} {name!r} cannot be answered by DNS as part of "
            f"<service>.<namespace>.ployz.internal: a DNS label is 1-63 letters, digits and "
            "'-', neither starting nor ending with '-'")


class GatewayHostClaimed(PlanError):
    """Another service already answers to this gateway host."""

    def __init__(self, path: str, host: str, holder: str) -> None:
        self.host = host
        self.holder = holder
        super().__init__(path, f"gateway host {host!r} belongs to service {holder}: each host "
                               "reaches one service; choose another or remove it there first")


class ImageNotOnMachine(DeployError):
    """A service's image is not in its machine's Docker (images are loaded, never pulled)."""

    def __init__(self, service: str, image: str, machine: str) -> None:
        self.service = service
        self.image = image
        self.machine = machine
        super().__init__(
            f"service {service!r}: image {image!r} is not on machine {machine!r}; load it there "
            "first"
        )


class DatasetInTheWay(DeployError):
    """The dataset a new volume would get already exists, unknown to the control plane."""

    def __init__(self, machine: str, dataset: str) -> None:
        self.machine = machine
        self.dataset = dataset
        super().__init__(
            f"dataset {dataset} already exists on machine {machine!r} but the control plane has "
            "no volume for it (left by an interrupted deploy?); inspect it and destroy it, or "
            "rename the volume"
        )


class NothingDeployed(DeployError):
    """The namespace has no committed service, so there is no manifest to derive."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        super().__init__(f"namespace {namespace!r} has no deployed service (see `ployzctl "
                         "service ls`)")


class MoveRefused(DeployError):
    """A service cannot be moved as asked (unknown service, same machine, shared volume)."""


class MoveNeedsTransfer(DeployError):
    """A plan moves volume data, which only the migration workflow can execute."""

    def __init__(self, volumes: list[str]) -> None:
        self.volumes = volumes
        super().__init__(
            f"the manifest moves volume(s) {', '.join(volumes)} to another machine; run "
            "`ployzctl migrate apply` for that service instead of `ployzctl deploy`"
        )


def rollback_message(headline: str, undone: list[str], left: list[str], *, undone_label: str,
                     left_label: str, intact: str) -> str:
    """A failure before a commit, told the same way for deploys and migrations: what was rolled
    back, and what was left behind (each names its machine) or that nothing changed."""
    message = headline
    if undone:
        message += f"\n  {undone_label}: " + "; ".join(undone)
    if left:
        message += f"\n  {left_label}: " + "; ".join(left)
    else:
        message += f"\n  {intact}"
    return message


class DeployFailed(DeployError):
    """A deploy failed before its commit; ``undone`` says what was rolled back and ``left``
    what could not be (each names the machine and the dataset or container)."""

    def __init__(
        self, deploy_id: str, phase: str, cause: str, undone: list[str], left: list[str]
    ) -> None:
        self.deploy_id = deploy_id
        self.phase = phase
        self.cause = cause
        self.undone = undone
        self.left = left
        super().__init__(rollback_message(
            f"deploy {deploy_id} failed in phase {phase}: {cause}", undone, left,
            undone_label="undone", left_label="LEFT BEHIND (remove by hand)",
            intact="nothing was committed; the cluster is as before"))


class DeployFailedAfterCommit(DeployError):
    """The commit landed but cleanup failed: the new state is in force, old containers remain."""

    def __init__(self, deploy_id: str, commit_seq: int, problems: list[str]) -> None:
        self.deploy_id = deploy_id
        self.commit_seq = commit_seq
        self.problems = problems
        super().__init__(
            f"deploy {deploy_id} committed as #{commit_seq}, but cleanup failed: "
            + "; ".join(problems)
        )
