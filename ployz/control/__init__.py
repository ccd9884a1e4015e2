"""ployz.control: the cluster's durable facts (the cluster and its members' addresses, invites,
machines, services, volumes, placements, routes, deploys, deploy commits, transfer evidence,
leases) behind one interface with two backends.

    from ployz.control import open_control_plane
    with open_control_plane("sqlite:///var/lib/ployz/control.db") as cp:
        lease = cp.acquire(deploy_lock_name("shop"), holder="deploy-1", ttl=1800)
        with LeaseKeeper(cp, lease, ttl=1800) as keeper:
            ...  # long work, calling keeper.check() between steps
            cp.commit("shop", lease.token, [SetVolumeOwner(volume="db", owner="machine-b")])
        cp.release(lease.name, lease.token)

See ``plane.py`` for how commits stay atomic on both backends.
"""

from ployz.control.errors import (
    AddressesExhausted,
    ClusterExists,
    ControlPlaneBusy,
    ControlPlaneError,
    ControlPlaneUnavailable,
    DuplicateWireGuardKey,
    InvalidArgument,
    InvalidChange,
    InvalidControlPlaneUrl,
    InvalidDeployTransition,
    InvalidName,
    InviteExpired,
    InviteUsed,
    LockHeld,
    MachineBusy,
    MachineExists,
    NoCluster,
    StaleFencingToken,
    UnknownCommit,
    UnknownDeploy,
    UnknownInvite,
    UnknownMachine,
    UnknownService,
    UnknownVolume,
)
from ployz.control.keeper import LeaseKeeper
from ployz.control.leases import deploy_lock_name
from ployz.control.models import (
    Allocation,
    Capacity,
    Change,
    ClusterInfo,
    Deploy,
    DeployCommit,
    Invite,
    Lease,
    Machine,
    NamespaceState,
    PutService,
    PutVolume,
    RecordTransfer,
    Removal,
    RemoveService,
    RemoveVolume,
    Route,
    Service,
    SetPlacement,
    SetRoute,
    SetVolumeOwner,
    TransferEvidence,
    Volume,
)
from ployz.control.plane import ControlPlane
from ployz.control.store import StoreWatch
from ployz.control.url import URL_ENV, control_plane_url, open_control_plane

__all__ = [
    "URL_ENV",
    "AddressesExhausted",
    "Allocation",
    "Capacity",
    "Change",
    "ClusterExists",
    "ClusterInfo",
    "ControlPlane",
    "ControlPlaneBusy",
    "ControlPlaneError",
    "ControlPlaneUnavailable",
    "Deploy",
    "DeployCommit",
    "DuplicateWireGuardKey",
    "InvalidArgument",
    "InvalidChange",
    "InvalidControlPlaneUrl",
    "InvalidDeployTransition",
    "InvalidName",
    "Invite",
    "InviteExpired",
    "InviteUsed",
    "Lease",
    "LeaseKeeper",
    "LockHeld",
    "Machine",
    "MachineBusy",
    "MachineExists",
    "NamespaceState",
    "NoCluster",
    "PutService",
    "PutVolume",
    "RecordTransfer",
    "Removal",
    "RemoveService",
    "RemoveVolume",
    "Route",
    "Service",
    "SetPlacement",
    "SetRoute",
    "SetVolumeOwner",
    "StaleFencingToken",
    "StoreWatch",
    "TransferEvidence",
    "UnknownCommit",
    "UnknownDeploy",
    "UnknownInvite",
    "UnknownMachine",
    "UnknownService",
    "UnknownVolume",
    "Volume",
    "control_plane_url",
    "deploy_lock_name",
    "open_control_plane",
]
