#!/usr/bin/env bash
# The demo `make demo` runs inside the sandbox cluster (as the operator, ployzctl configured):
# deploy a service that writes to its ZFS volume on machine-a and serves HTTP, then preview,
# render and apply its migration to machine-b while it keeps writing and a client on machine-c
# keeps asking it (by name, by address and through the gateway), and show where everything
# ended up and what the client saw.
set -euo pipefail

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

workdir=$(mktemp -d)
cat >"$workdir/deploy.toml" <<'TOML'
namespace = "demo"

[[volumes]]
name = "data"
quota = "256M"
owner = "machine-a"

[[services]]
name = "writer"
placement = "machine-a"

[services.template]
image = "ployz-test/busybox:latest"
mounts = { data = "/data" }
ports = [8080]
command = ["sh", "-c", """
trap 'exit 0' TERM
mkdir -p /tmp/www && hostname > /tmp/www/instance && httpd -p 8080 -h /tmp/www
[ -f /data/fill ] || dd if=/dev/urandom of=/data/fill bs=1M count=48 2>/dev/null
i=$(tail -n 1 /data/log 2>/dev/null); i=${i:-0}
while true; do i=$((i+1)); echo $i >> /data/log; sync; sleep 0.1; done
"""]

[services.http]
host = "writer.demo.example"
port = 8080
TOML

step "the cluster"
ployzctl machine ls

step "deploy demo/writer with its volume on machine-a"
ployzctl deploy -f "$workdir/deploy.toml"
ployzctl service ls
sleep 10

step "migrate preview demo/writer --to machine-b (changes nothing)"
ployzctl migrate preview demo/writer --to machine-b

step "migrate render-manifest demo/writer --to machine-b"
ployzctl migrate render-manifest demo/writer --to machine-b | tee "$workdir/move.toml"
ployzctl deploy preview -f "$workdir/move.toml"

step "migrate apply demo/writer --to machine-b, while a client on machine-c asks it"
python -m ployz.sandbox.watch --on machine-c --service demo/writer --path /instance -- \
    ployzctl migrate apply demo/writer --to machine-b

step "after the migration"
ployzctl service ls
ployzctl machine ls
sleep 3
log=$(find /run/ployz/machine-b/pool -name log -path '*demo.data*' | head -n 1)
echo "the writer's log on machine-b: $(wc -l <"$log") lines, last $(tail -n 1 "$log")"
