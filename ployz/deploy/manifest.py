"""The deploy manifest (``deploy.toml``, TOML or JSON): a namespace's desired state.

    namespace = "shop"

    [[volumes]]
    name = "db"
    quota = "1G"
    owner = "machine-a"

    [[services]]
    name = "db"
    placement = "machine-a"
    [services.template]
    image = "postgres:16"
    mounts = { db = "/var/lib/postgresql/data" }
    ports = [5432]                    # TCP ports the container listens on

    [services.http]                   # optional: reached through every machine's gateway
    host = "db.example.com"
    port = 5432

    [intent.volumes.db.move]          # only in manifests that move data (ployzctl migrate)
    from_machine = "machine-a"
    to_machine = "machine-b"

A manifest describes the state *after* the deploy: a volume's ``owner`` and a service's
``placement`` are where they will be. An intent says how to get there when that is not obvious
(a volume whose owner changes must say it moves, or the deploy refuses to lose its data).

Every problem is reported with its field path (``services[0].template.image: field required``),
all of them at once, so an operator fixes a manifest in one go. :func:`render` writes a manifest
back as TOML that parses to the same model: that is how ``ployzctl migrate render-manifest``
prints what it will submit.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic_core import ErrorDetails

from ployz.control.models import IDENTIFIER_RULE, check_name
from ployz.deploy.errors import Issue, ManifestError
from ployz.net.names import is_dns_name
from ployz.runtime.model import (
    NAME_PATTERN,
    AbsolutePath,
    Healthcheck,
    Resources,
    RestartPolicy,
    UserLabels,
)
from ployz.transfer.units import parse_size

STDIN = "-"

_NAME_RE = re.compile(NAME_PATTERN)
_NAME_RULE = "1-63 lowercase letters, digits or '-', starting with a letter or digit"


def _name(value: str) -> str:
    # Namespace, service and volume names become container names and dataset names, which
    # are stricter than control-plane identifiers: lowercase, no '_'.
    if not _NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid name: {_NAME_RULE}")
    return value


def _machine_id(value: str) -> str:
    try:
        return check_name("machine id", value)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid machine id: {IDENTIFIER_RULE}") from None


def _argv(value: Any) -> Any:
    """A command may be written as a list or as one string split like a shell would."""
    return shlex.split(value) if isinstance(value, str) else value


def _host_name(value: str) -> str:
    """A gateway host is matched against the request's ``Host`` lowercased: a DNS name."""
    if not is_dns_name(value):
        raise ValueError(f"{value!r} is not a host name: dot-separated labels of letters, "
                         "digits and '-' (not at either end of a label), 253 characters at most")
    return value.lower()


Name = Annotated[str, AfterValidator(_name)]
Port = Annotated[int, Field(ge=1, le=65535)]
MachineId = Annotated[str, AfterValidator(_machine_id)]
Argv = Annotated[list[str], BeforeValidator(_argv), Field(min_length=1)]
Quota = Annotated[int, BeforeValidator(parse_size)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ManifestVolume(_Model):
    """A ZFS volume. ``scope = "single"``: at most one service mounts it (its data has one
    writer, which is what makes moving it safe); ``"shared"``: several services on the owner
    machine may mount it. ``mode`` is how services mount it (``rw`` or ``ro``)."""

    name: Name
    scope: Literal["single", "shared"] = "single"
    quota: Quota | None = None
    mode: Literal["rw", "ro"] = "rw"
    owner: MachineId


class ContainerTemplate(_Model):
    """How to create the service's container; ``mounts`` maps a volume name to a path in it."""

    image: str = Field(min_length=1)
    command: Argv | None = None
    entrypoint: Argv | None = None
    env: dict[str, str] = Field(default_factory=dict)
    mounts: dict[str, AbsolutePath] = Field(default_factory=dict)
    user: str | None = None
    restart: RestartPolicy = "unless-stopped"
    labels: UserLabels = Field(default_factory=dict)
    readiness: Healthcheck | None = None
    resources: Resources | None = None
    """Limits (``memory_bytes``, ``cpus``); unlimited when absent."""
    ports: list[Port] = Field(default_factory=list)
    """TCP ports the container listens on, at the service's stable address."""


class HttpRoute(_Model):
    """HTTP requests whose ``Host`` is ``host`` go through every machine's gateway to the
    service's ``port``."""

    host: Annotated[str, AfterValidator(_host_name)]
    port: Port


class ManifestService(_Model):
    name: Name
    placement: MachineId
    template: ContainerTemplate
    http: HttpRoute | None = None


class VolumeMove(_Model):
    from_machine: MachineId
    to_machine: MachineId


class VolumeIntent(_Model):
    move: VolumeMove | None = None


class Intent(_Model):
    volumes: dict[str, VolumeIntent] = Field(default_factory=dict)


class Manifest(_Model):
    namespace: Name
    volumes: list[ManifestVolume] = Field(default_factory=list)
    services: list[ManifestService] = Field(min_length=1)
    intent: Intent | None = None

    def volume(self, name: str) -> ManifestVolume:
        return next(v for v in self.volumes if v.name == name)

    def move_of(self, volume: str) -> VolumeMove | None:
        hint = self.intent.volumes.get(volume) if self.intent else None
        return hint.move if hint else None

    def digest(self) -> str:
        """A short hash of the manifest's content: names deploys and migration snapshots."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# --- reading -------------------------------------------------------------------------------


def load_manifest(path: str) -> Manifest:
    """Read and validate the manifest at ``path`` (``-`` reads standard input)."""
    source = "<stdin>" if path == STDIN else path
    try:
        text = sys.stdin.read() if path == STDIN else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(source, [Issue("", f"cannot read the manifest: {exc}")]) from exc
    return parse_manifest(text, source)


def parse_manifest(text: str, source: str) -> Manifest:
    """Validate a manifest given as TOML or JSON text (JSON when it starts with ``{``: a TOML
    document never does). ``source`` names the file in errors."""
    data = _decode(text, source)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(source, [_issue(error) for error in exc.errors()]) from None
    issues = consistency_issues(manifest)
    if issues:
        raise ManifestError(source, issues)
    return manifest


def _decode(text: str, source: str) -> Any:
    try:
        if text.lstrip().startswith("{"):
            return json.loads(text)
        return tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(source, [Issue("", f"not valid JSON: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(source, [Issue("", f"not valid TOML: {exc}")]) from None


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("services", 0, "template", "image")`` -> ``services[0].template.image``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _issue(error: ErrorDetails) -> Issue:
    messages = {
        "missing": "field required",
        "extra_forbidden": "unknown field (not part of the deploy manifest format)",
    }
    message = messages.get(error["type"], error["msg"].removeprefix("Value error, "))
    return Issue(field_path(error["loc"]), message)


# --- rules across fields -------------------------------------------------------------------


def consistency_issues(manifest: Manifest) -> list[Issue]:
    """Problems that no single field shows: names, mounts, owners and intents that disagree."""
    issues = _duplicates("volumes", [v.name for v in manifest.volumes])
    issues += _duplicates("services", [s.name for s in manifest.services])
    issues += _duplicate_hosts(manifest.services)
    volumes = {v.name: v for v in manifest.volumes}
    mounted_by: dict[str, list[str]] = {name: [] for name in volumes}
    for i, service in enumerate(manifest.services):
        if service.http is not None and service.http.port not in service.template.ports:
            issues.append(Issue(f"services[{i}].http.port",
                                f"{service.http.port} is not one of the service's ports "
                                f"(template.ports: {service.template.ports})"))
        for volume_name in service.template.mounts:
            path = f"services[{i}].template.mounts.{volume_name}"
            volume = volumes.get(volume_name)
            if volume is None:
                known = ", ".join(sorted(volumes)) or "none"
                issues.append(Issue(path, f"unknown volume {volume_name!r} (declared: {known})"))
                continue
            mounted_by[volume_name].append(service.name)
            if service.placement != volume.owner:
                issues.append(Issue(
                    f"services[{i}].placement",
                    f"service {service.name!r} mounts volume {volume_name!r}, which lives on "
                    f"{volume.owner!r}; a service runs where its volumes are",
                ))
    for i, volume in enumerate(manifest.volumes):
        users = mounted_by.get(volume.name, [])
        if volume.scope == "single" and len(users) > 1:
            issues.append(Issue(
                f"volumes[{i}]",
                f"volume {volume.name!r} has scope single but is mounted by services "
                f"{', '.join(repr(u) for u in users)}; give each its own volume or use scope "
                "shared",
            ))
    if manifest.intent is not None:
        issues += _intent_issues(manifest.intent.volumes, volumes)
    return issues


def _duplicates(field: str, names: list[str]) -> list[Issue]:
    first: dict[str, int] = {}
    issues = []
    for i, name in enumerate(names):
        if name in first:
            issues.append(Issue(f"{field}[{i}].name",
                                f"duplicate name {name!r} (also {field}[{first[name]}])"))
        first.setdefault(name, i)
    return issues


def _duplicate_hosts(services: list[ManifestService]) -> list[Issue]:
    first: dict[str, int] = {}
    issues = []
    for i, service in enumerate(services):
        if service.http is None:
            continue
        host = service.http.host
        if host in first:
            issues.append(Issue(f"services[{i}].http.host",
                                f"gateway host {host!r} is also services[{first[host]}]'s: a "
                                "host reaches one service"))
        first.setdefault(host, i)
    return issues


def _intent_issues(
    hints: Mapping[str, VolumeIntent], volumes: Mapping[str, ManifestVolume]
) -> list[Issue]:
    issues = []
    for name, hint in hints.items():
        path = f"intent.volumes.{name}"
        if name not in volumes:
            issues.append(Issue(path, f"unknown volume {name!r}"))
            continue
        move = hint.move
        if move is None:
            continue
        if move.from_machine == move.to_machine:
            issues.append(Issue(f"{path}.move",
                                f"from_machine and to_machine are both {move.to_machine!r}"))
        owner = volumes[name].owner
        if move.to_machine != owner:
            issues.append(Issue(
                f"{path}.move.to_machine",
                f"must be the volume's owner {owner!r}: the manifest describes the state after "
                "the move",
            ))
    return issues


# --- writing -------------------------------------------------------------------------------


def render(manifest: Manifest) -> str:
    """The manifest as TOML; :func:`parse_manifest` reads it back to an equal model."""
    return tomli_w.dumps(manifest.model_dump(mode="json", exclude_none=True, exclude_defaults=True))
