"""The error of forming and changing a cluster's membership."""

from __future__ import annotations

from ployz.deploy.errors import DeployError


class MembershipError(DeployError):
    """A step of init, invite, join or rm could not be done; the message says which and why."""
