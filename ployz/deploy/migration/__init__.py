"""Migrations: moving a service and its ZFS volumes to another machine (``ployzctl migrate``).

    ref = parse_service_ref("shop/db")
    plan = plan_migration(cp, agents, ref, "machine-b")      # preview: changes nothing
    render(plan.manifest)                                     # render-manifest
    migrate(cp, agents, ref, "machine-b", emit=print)        # apply

A migration is a deploy of kind ``migrate`` whose manifest is the namespace as committed with the
service moved (:func:`ployz.deploy.current.move_service`); see :mod:`.apply` for its phases.
"""

from ployz.deploy.migration.apply import MigrationResult, migrate, settle, unfinished
from ployz.deploy.migration.errors import (
    MalformedServiceRef,
    MigrationAborted,
    MigrationFailedAfterCommit,
    MigrationRefused,
    TargetDatasetExists,
    TargetWithoutRoom,
)
from ployz.deploy.migration.events import Emit, Event
from ployz.deploy.migration.plan import (
    FINAL_DELTA,
    MAX_PRECOPY_ROUNDS,
    PHASES,
    ROOM_MARGIN,
    MigrationPlan,
    TargetRoom,
    VolumeMovePlan,
    plan_migration,
)
from ployz.deploy.migration.record import MigrationRecord, snapshot_name
from ployz.deploy.migration.ref import ServiceRef, parse_service_ref
from ployz.deploy.migration.transfer import TransferFailed

__all__ = [
    "FINAL_DELTA",
    "MAX_PRECOPY_ROUNDS",
    "PHASES",
    "ROOM_MARGIN",
    "Emit",
    "Event",
    "MalformedServiceRef",
    "MigrationAborted",
    "MigrationFailedAfterCommit",
    "MigrationPlan",
    "MigrationRecord",
    "MigrationRefused",
    "MigrationResult",
    "ServiceRef",
    "TargetDatasetExists",
    "TargetRoom",
    "TargetWithoutRoom",
    "TransferFailed",
    "VolumeMovePlan",
    "migrate",
    "parse_service_ref",
    "plan_migration",
    "settle",
    "snapshot_name",
    "unfinished",
]
