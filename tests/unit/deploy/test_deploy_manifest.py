"""The deploy manifest: valid forms, every refusal with its field path, and the TOML round trip."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ployz.deploy.errors import ManifestError
from ployz.deploy.manifest import Manifest, load_manifest, parse_manifest, render

VALID = textwrap.dedent("""
    namespace = "shop"

    [[volumes]]
    name = "db"
    quota = "1G"
    owner = "machine-a"

    [[volumes]]
    name = "assets"
    scope = "shared"
    mode = "ro"
    owner = "machine-a"

    [[services]]
    name = "db"
    placement = "machine-a"
    [services.template]
    image = "ployz-test/busybox:latest"
    command = "sh -c 'echo started; sleep 600'"
    env = { PGDATA = "/data/pg" }
    mounts = { db = "/data", assets = "/assets" }
    user = "nobody"
    restart = "always"
    labels = { team = "core" }
    readiness = { test = ["CMD", "test", "-d", "/data"], interval_s = 0.5 }
    resources = { memory_bytes = 268435456, cpus = 0.5 }

    [[services]]
    name = "web"
    placement = "machine-a"
    [services.template]
    image = "ployz-test/busybox:latest"
    entrypoint = ["httpd", "-f"]
    mounts = { assets = "/www" }
""")


def parse(text: str) -> Manifest:
    return parse_manifest(text, "deploy.toml")


def issues_of(text: str) -> dict[str, str]:
    with pytest.raises(ManifestError) as excinfo:
        parse(text)
    assert excinfo.value.source == "deploy.toml"
    assert "deploy.toml: invalid deploy manifest" in str(excinfo.value)
    return {issue.path: issue.message for issue in excinfo.value.issues}


def test_valid_manifest_parses_with_defaults_and_normalised_values():
    manifest = parse(VALID)
    db, assets = manifest.volumes
    assert (db.scope, db.quota, db.mode, db.owner) == ("single", 1 << 30, "rw", "machine-a")
    assert (assets.scope, assets.quota, assets.mode) == ("shared", None, "ro")
    template = manifest.services[0].template
    assert template.command == ["sh", "-c", "echo started; sleep 600"]
    assert template.mounts == {"db": "/data", "assets": "/assets"}
    assert template.readiness is not None and template.readiness.interval_s == 0.5
    assert template.resources is not None and template.resources.cpus == 0.5
    assert manifest.services[1].template.restart == "unless-stopped"
    assert manifest.intent is None


def test_json_manifest_is_the_same_model_as_toml():
    manifest = parse(VALID)
    as_json = json.dumps(manifest.model_dump(mode="json"))
    assert parse_manifest(as_json, "deploy.json") == manifest


def test_render_round_trips_to_the_same_model():
    with_move = VALID.replace('owner = "machine-a"', 'owner = "machine-b"').replace(
        'placement = "machine-a"', 'placement = "machine-b"'
    ) + textwrap.dedent("""
        [intent.volumes.db.move]
        from_machine = "machine-a"
        to_machine = "machine-b"
    """)
    for text in (VALID, with_move):
        manifest = parse(text)
        rendered = render(manifest)
        assert parse(rendered) == manifest
        assert render(parse(rendered)) == rendered
    moved = parse(with_move)
    assert moved.move_of("db") is not None and moved.move_of("db").to_machine == "machine-b"
    assert "[intent.volumes.db.move]" in render(moved)


def test_digest_follows_content_not_formatting():
    manifest = parse(VALID)
    assert parse(render(manifest)).digest() == manifest.digest()
    assert parse(VALID.replace("sleep 600", "sleep 601")).digest() != manifest.digest()


def test_load_manifest_reads_files_and_names_unreadable_ones(tmp_path: Path):
    path = tmp_path / "deploy.toml"
    path.write_text(VALID)
    assert load_manifest(str(path)) == parse(VALID)
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(str(tmp_path / "missing.toml"))
    assert excinfo.value.source.endswith("missing.toml")
    assert "cannot read the manifest" in str(excinfo.value)


MINIMAL = textwrap.dedent("""
    namespace = "shop"
    [[volumes]]
    name = "db"
    owner = "machine-a"
    [[services]]
    name = "db"
    placement = "machine-a"
    [services.template]
    image = "img"
    mounts = { db = "/data" }
""")


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (MINIMAL.replace('image = "img"', ""), "services[0].template.image", "field required"),
        (MINIMAL.replace('namespace = "shop"', ""), "namespace", "field required"),
        (MINIMAL.replace('namespace = "shop"', 'namespace = "Shop_1"'), "namespace",
         "not a valid name"),
        (MINIMAL.replace('owner = "machine-a"', 'owner = "machine a"'), "volumes[0].owner",
         "not a valid machine id"),
        (MINIMAL.replace('owner = "machine-a"', 'owner = "machine-a"\nquota = "lots"'),
         "volumes[0].quota", "is not a size"),
        (MINIMAL.replace('owner = "machine-a"', 'owner = "machine-a"\nquota = 0'),
         "volumes[0].quota", "must be positive"),
        (MINIMAL.replace('owner = "machine-a"', 'owner = "machine-a"\nscope = "global"'),
         "volumes[0].scope", "'single' or 'shared'"),
        (MINIMAL.replace('owner = "machine-a"', 'owner = "machine-a"\nsize = 3'),
         "volumes[0].size", "unknown field"),
        (MINIMAL.replace('"/data"', '"data"'), "services[0].template.mounts.db",
         "absolute, normalized path"),
        (MINIMAL.replace('"/data"', '"/data/../etc"'), "services[0].template.mounts.db",
         "absolute, normalized path"),
        (MINIMAL.replace('image = "img"', 'image = "img"\nenv = { PORT = 80 }'),
         "services[0].template.env.PORT", "valid string"),
        (MINIMAL.replace('image = "img"', 'image = "img"\nrestart = "sometimes"'),
         "services[0].template.restart", "'no', 'always'"),
        (MINIMAL.replace('image = "img"', 'image = "img"\nlabels = { "ployz.deploy" = "x" }'),
         "services[0].template.labels", "reserved"),
        (MINIMAL.replace('image = "img"', 'image = "img"\nreadiness = { test = ["true"] }'),
         "services[0].template.readiness.test", "at least 2 items"),
        (MINIMAL.replace('image = "img"', 'image = "img"\nresources = { cpus = 0 }'),
         "services[0].template.resources.cpus", "greater than 0"),
        (MINIMAL.replace('image = "img"', 'image = "img"\ncommand = []'),
         "services[0].template.command", "at least 1 item"),
        ('namespace = "shop"\n', "services", "field required"),
        (MINIMAL.replace('image = "img"', 'image = "img"\nports = [0]'),
         "services[0].template.ports[0]", "greater than or equal to 1"),
        (MINIMAL.replace('image = "img"', 'image = "img"\nports = [80]')
         + '[services.http]\nhost = "-bad-.example"\nport = 80\n', "services[0].http.host",
         "is not a host name"),
        (MINIMAL + '[services.http]\nhost = "shop.example"\n', "services[0].http.port",
         "field required"),
        ("namespace = [", "", "not valid TOML"),
        ('{"namespace": ', "", "not valid JSON"),
    ],
)
def test_invalid_field_is_reported_with_its_path(text: str, path: str, message: str):
    issues = issues_of(text)
    assert path in issues, issues
    assert message in issues[path]


def test_every_problem_is_reported_at_once():
    text = MINIMAL.replace('image = "img"', "").replace('name = "db"\nowner', 'name = "DB"\nowner')
    assert set(issues_of(text)) == {"volumes[0].name", "services[0].template.image"}


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (MINIMAL.replace('mounts = { db = "/data" }', 'mounts = { logs = "/logs" }'),
         "services[0].template.mounts.logs", "unknown volume 'logs' (declared: db)"),
        (MINIMAL.replace('placement = "machine-a"', 'placement = "machine-b"'),
         "services[0].placement", "lives on 'machine-a'"),
        (MINIMAL + '[[volumes]]\nname = "db"\nowner = "machine-a"\n', "volumes[1].name",
         "duplicate name 'db' (also volumes[0])"),
        (MINIMAL + '[[services]]\nname = "db"\nplacement = "machine-a"\n'
         '[services.template]\nimage = "img"\n', "services[1].name", "duplicate name 'db'"),
        (MINIMAL + '[intent.volumes.logs.move]\nfrom_machine = "machine-b"\n'
         'to_machine = "machine-a"\n', "intent.volumes.logs", "unknown volume 'logs'"),
        (MINIMAL + '[intent.volumes.db.move]\nfrom_machine = "machine-a"\n'
         'to_machine = "machine-c"\n', "intent.volumes.db.move.to_machine",
         "must be the volume's owner 'machine-a'"),
        (MINIMAL + '[intent.volumes.db.move]\nfrom_machine = "machine-a"\n'
         'to_machine = "machine-a"\n', "intent.volumes.db.move", "both 'machine-a'"),
        (MINIMAL.replace('image = "img"', 'image = "img"\nports = [8080]')
         + '[services.http]\nhost = "shop.example"\nport = 9090\n', "services[0].http.port",
         "9090 is not one of the service's ports (template.ports: [8080])"),
        (MINIMAL.replace('image = "img"', 'image = "img"\nports = [80]')
         + '[services.http]\nhost = "shop.example"\nport = 80\n'
         + '[[services]]\nname = "two"\nplacement = "machine-a"\n[services.template]\n'
         'image = "img"\nports = [80]\n[services.http]\nhost = "SHOP.example"\nport = 80\n',
         "services[1].http.host", "gateway host 'shop.example' is also services[0]'s"),
    ],
)
def test_inconsistent_manifest_is_reported_with_its_path(text: str, path: str, message: str):
    issues = issues_of(text)
    assert path in issues, issues
    assert message in issues[path]


def test_single_scope_volume_mounted_by_two_services_is_refused():
    second = textwrap.dedent("""
        [[services]]
        name = "backup"
        placement = "machine-a"
        [services.template]
        image = "img"
        mounts = { db = "/backup" }
    """)
    issues = issues_of(MINIMAL + second)
    assert issues == {
        "volumes[0]": "volume 'db' has scope single but is mounted by services 'db', 'backup'; "
                      "give each its own volume or use scope shared"
    }
    shared = MINIMAL.replace('owner = "machine-a"', 'owner = "machine-a"\nscope = "shared"')
    assert len(parse(shared + second).services) == 2
