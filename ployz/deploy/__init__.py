"""Deploys: the manifest, the plan against the control plane's facts, and their execution.

    manifest = load_manifest("deploy.toml")
    plan = make_plan(manifest, cp)                 # changes nothing: what `deploy preview` shows
    deploy(cp, manifest, AgentDirectory(key), holder="operator@laptop")
"""

from ployz.deploy.agents import DEFAULT_AGENT_PORT, AgentDirectory, agent_address
from ployz.deploy.apply import DeployResult, deploy, plan_deploy
from ployz.deploy.current import current_manifest, move_service
from ployz.deploy.errors import (
    DatasetInTheWay,
    DeployError,
    DeployFailed,
    DeployFailedAfterCommit,
    ImageNotOnMachine,
    InsufficientCapacity,
    Issue,
    MachineDraining,
    MachineSilent,
    ManifestError,
    MoveNeedsTransfer,
    MoveRefused,
    MoveSourceMismatch,
    NothingDeployed,
    PlanError,
    QuotaChangeUnsupported,
    UnknownPlacement,
    VolumeOwnerConflict,
)
from ployz.deploy.manifest import (
    ContainerTemplate,
    Intent,
    Manifest,
    ManifestService,
    ManifestVolume,
    VolumeIntent,
    VolumeMove,
    load_manifest,
    parse_manifest,
    render,
)
from ployz.deploy.plan import DeployPlan, ServiceAction, VolumeAction, make_plan

__all__ = [
    "DEFAULT_AGENT_PORT",
    "AgentDirectory",
    "ContainerTemplate",
    "DatasetInTheWay",
    "DeployError",
    "DeployFailed",
    "DeployFailedAfterCommit",
    "DeployPlan",
    "DeployResult",
    "ImageNotOnMachine",
    "InsufficientCapacity",
    "Intent",
    "Issue",
    "MachineDraining",
    "MachineSilent",
    "Manifest",
    "ManifestError",
    "ManifestService",
    "ManifestVolume",
    "MoveNeedsTransfer",
    "MoveRefused",
    "MoveSourceMismatch",
    "NothingDeployed",
    "PlanError",
    "QuotaChangeUnsupported",
    "ServiceAction",
    "UnknownPlacement",
    "VolumeAction",
    "VolumeIntent",
    "VolumeMove",
    "VolumeOwnerConflict",
    "agent_address",
    "current_manifest",
    "deploy",
    "load_manifest",
    "make_plan",
    "move_service",
    "parse_manifest",
    "plan_deploy",
    "render",
]
