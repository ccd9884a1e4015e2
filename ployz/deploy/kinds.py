"""The kinds of deploy run, by the name their records carry: what a run settles when it finds
an unfinished record of any of them in its namespace."""

from __future__ import annotations

from typing import Any

from ployz.deploy.migration.settle import MIGRATION
from ployz.deploy.plain import PLAIN_DEPLOY
from ployz.deploy.run import RunKind

KINDS: dict[str, RunKind[Any]] = {PLAIN_DEPLOY.name: PLAIN_DEPLOY, MIGRATION.name: MIGRATION}
