"""Containers through the Docker Engine API: the service model, the runtime and its errors.

The runtime itself is :class:`ployz.runtime.docker_runtime.DockerRuntime`, imported from its
module: it brings in the Docker SDK, which the orchestrator and ployzctl, needing only the
model and the errors, should not pay for on every command.

Names are imported from their modules: the package imports none of them, so reaching one
module does not load the others (under emulation each import adds seconds to every ployzctl
start)."""
