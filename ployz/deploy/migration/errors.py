"""Typed errors of migrations: each says what was asked, what was found and what is left.

Refusals (:class:`MalformedServiceRef`, :class:`MigrationRefused` and the plan errors of
:mod:`ployz.deploy.errors` it reuses) happen before any mutation. :class:`MigrationAborted` is a
failure before the commit, after which the source runs again; :class:`MigrationFailedAfterCommit`
a failure after it, which ``migrate apply`` run again finishes.
"""

from __future__ import annotations

from ployz.deploy.errors import DeployError, PlanError, rollback_message
from ployz.transfer.units import format_size


class MalformedServiceRef(DeployError):
    """The service was not given as ``<namespace>/<service>``."""

    def __init__(self, ref: str, why: str) -> None:
        self.ref = ref
        super().__init__(f"malformed service reference {ref!r}: {why} (expected "
                         "NAMESPACE/SERVICE, e.g. shop/db)")


class MigrationRefused(DeployError):
    """The migration cannot be done as asked (unknown service, target is the source, ...)."""


class TargetDatasetExists(PlanError):
    """The dataset the volume would be received into already exists on the target."""

    def __init__(self, machine: str, dataset: str) -> None:
        self.machine = machine
        self.dataset = dataset
        super().__init__(
            "target", f"dataset {dataset} already exists on {machine!r}; the control plane does "
            "not own it (left by an earlier move kept with --keep-source?): inspect and destroy "
            "it first")


class TargetWithoutRoom(PlanError):
    """The target pool cannot take the volumes with the safety margin."""

    def __init__(self, machine: str, needed: int, free: int, margin: float) -> None:
        self.machine = machine
        self.needed = needed
        self.free = free
        super().__init__(
            "target", f"machine {machine!r} has {format_size(free)} ({free} bytes) free; the "
            f"volumes need {format_size(needed)} ({needed} bytes) including a "
            f"{margin:.0%} margin; free space there or pick another machine")


class PrecopyWontConverge(DeployError):
    """The service writes faster than pre-copy can catch up with inside the downtime budget;
    raised before the fence, so the run rolls back and the service goes on on its source."""

    def __init__(self, budget_s: float, write_bytes_per_s: float, link_bytes_per_s: float | None,
                 delta: int, rounds: int) -> None:
        self.budget_s = budget_s
        self.write_bytes_per_s = write_bytes_per_s
        self.link_bytes_per_s = link_bytes_per_s
        link = (f"{format_size(int(link_bytes_per_s))}/s" if link_bytes_per_s is not None
                else "an unmeasured rate")
        super().__init__(
            f"pre-copy cannot converge to a downtime of {budget_s:g} s: the service writes "
            f"{format_size(int(write_bytes_per_s))}/s and the link carries {link}; after "
            f"{rounds} rounds {format_size(delta)} were still to send. Raise --max-downtime, or "
            "migrate when the service writes less")


class MigrationAborted(DeployError):
    """The migration failed before its commit and was rolled back: the service runs on its
    source again. ``undone`` lists what was rolled back, ``left`` what could not be."""

    def __init__(self, deploy_id: str, step: str, cause: str, undone: list[str],
                 left: list[str]) -> None:
        self.deploy_id = deploy_id
        self.step = step
        self.cause = cause
        self.undone = undone
        self.left = left
        super().__init__(rollback_message(
            f"migration {deploy_id} aborted during {step}: {cause}", undone, left,
            undone_label="rolled back",
            left_label="LEFT BEHIND (run `ployzctl migrate apply` again to retry the rollback, "
                       "or remove by hand)",
            intact="nothing was committed; the service runs on its source as before"))


class MigrationFailedAfterCommit(DeployError):
    """The commit landed (the service and its volumes belong to the target) but cleanup
    failed; running ``migrate apply`` again finishes it."""

    def __init__(self, deploy_id: str, commit_seq: int, problems: list[str]) -> None:
        self.deploy_id = deploy_id
        self.commit_seq = commit_seq
        self.problems = problems
        super().__init__(
            f"migration {deploy_id} committed as #{commit_seq} (failed-after-commit): cleanup "
            "failed: " + "; ".join(problems) + "; run `ployzctl migrate apply` again to finish it")
