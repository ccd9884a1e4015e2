"""Typed errors of the container runtime.

Each error names the thing the operator has to look at (the socket, the image, the container) so a
message read on another machine, relayed through the agent, still says what to do.
"""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base of every error raised by :mod:`ployz.runtime`."""

    def details(self) -> dict[str, object]:
        """Structured fields of the error, relayed as-is by the agent's RPC."""
        return {}


class DaemonUnreachable(RuntimeFailure):
    """The Docker daemon does not answer on its socket."""

    def __init__(self, socket: str, reason: str) -> None:
        super().__init__(f"Docker daemon unreachable on unix socket {socket}: {reason}")
        self.socket = socket
        self.reason = reason

    def details(self) -> dict[str, object]:
        return {"socket": self.socket}


class ImageMissing(RuntimeFailure):
    """The image is not present in the daemon's image store (ployz never pulls implicitly)."""

    def __init__(self, image: str) -> None:
        super().__init__(f"image {image!r} is not present on this Docker daemon; load it first")
        self.image = image

    def details(self) -> dict[str, object]:
        return {"image": self.image}


class ContainerNotFound(RuntimeFailure):
    def __init__(self, name: str) -> None:
        super().__init__(f"container {name!r} does not exist")
        self.name = name

    def details(self) -> dict[str, object]:
        return {"container": self.name}


class ContainerExists(RuntimeFailure):
    """A container with this name already exists; remove it or use another deploy id."""

    def __init__(self, name: str) -> None:
        super().__init__(f"container {name!r} already exists")
        self.name = name

    def details(self) -> dict[str, object]:
        return {"container": self.name}


class ContainerExited(RuntimeFailure):
    """The container stopped (or restarted) while we waited for it to run; carries the tail of
    its log. ``exit_code`` is None when a restart policy already started it again, because
    Docker forgets the status of the previous run at each start."""

    def __init__(self, name: str, exit_code: int | None, log_tail: str) -> None:
        status = "crashed and was restarted" if exit_code is None else f"exited with {exit_code}"
        super().__init__(
            f"container {name!r} {status} while starting; "
            f"last output: {log_tail.strip() or '(none)'}"
        )
        self.name = name
        self.exit_code = exit_code
        self.log_tail = log_tail

    def details(self) -> dict[str, object]:
        return {"container": self.name, "exit_code": self.exit_code, "log_tail": self.log_tail}


class ContainerUnhealthy(RuntimeFailure):
    """Docker marked the container unhealthy: its healthcheck failed its retries."""

    def __init__(self, name: str, last_check: str) -> None:
        super().__init__(
            f"container {name!r} is unhealthy; last healthcheck output: "
            f"{last_check.strip() or '(none)'}"
        )
        self.name = name
        self.last_check = last_check

    def details(self) -> dict[str, object]:
        return {"container": self.name, "last_check": self.last_check}


class WaitTimeout(RuntimeFailure):
    """The container neither became ready nor failed within the time allowed."""

    def __init__(self, name: str, timeout_s: float, state: str) -> None:
        super().__init__(
            f"container {name!r} not ready after {timeout_s:g} s (state: {state})"
        )
        self.name = name
        self.timeout_s = timeout_s
        self.state = state

    def details(self) -> dict[str, object]:
        return {"container": self.name, "timeout_s": self.timeout_s, "state": self.state}


class DockerRequestFailed(RuntimeFailure):
    """The daemon refused a request for a reason not covered above (its message is kept)."""

    def __init__(self, operation: str, message: str) -> None:
        super().__init__(f"Docker refused to {operation}: {message}")
        self.operation = operation

    def details(self) -> dict[str, object]:
        return {"operation": self.operation}


class MountSourceMissing(RuntimeFailure):
    """A mount's host directory does not exist (for a volume: the dataset is not mounted)."""

    def __init__(self, source: str) -> None:
        super().__init__(
            f"mount source {source} does not exist on this machine; is its dataset mounted?"
        )
        self.source = source

    def details(self) -> dict[str, object]:
        return {"source": self.source}
