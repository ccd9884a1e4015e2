"""One end of an engine transfer, as its own process, so that it is measured like every other
contender (wall time and the CPU of the processes doing the work) and can run inside a network
namespace.

    python -m bench.datapath.engine_peer receive HOST:PORT PUBKEY DST
    python -m bench.datapath.engine_peer send HOST:PORT PRIVKEY SRC CODEC [BASE]

SRC and DST are file paths, or ``zfs:POOL/DS@SNAP`` and ``zfs:POOL/DS`` (BASE then names the
incremental base, e.g. ``@a``); the ZFS suite runs the same peer inside the VM.

Both print ``ready`` once their imports are done (the receiver once it listens), and the sender
waits for a line on stdin before it connects: interpreter start-up is a fixed cost that says
nothing about the data path, and the pipelines it is compared with start in milliseconds. At the
end each prints one JSON line: the engine's summary plus ``startup_cpu``, the CPU seconds spent
before ``ready``, which the benchmark subtracts. ``PLOYZ_BENCH_FRAME_SIZE`` sets the sender's
frame size (default: the engine's).
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sys

from ployz.transfer.endpoints import Sink, Source
from ployz.transfer.files import FileSink, FileSource
from ployz.transfer.keys import load_private_key, load_public_key
from ployz.transfer.protocol import DEFAULT_FRAME_SIZE
from ployz.transfer.receiver import Receiver
from ployz.transfer.sender import Sender


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def ready() -> float:
    startup = own_cpu()
    print("ready", flush=True)
    return startup


def source(spec: str, base: str | None) -> Source:
    if spec.startswith("zfs:"):
        from ployz.transfer.zfs_endpoints import ZfsSource
        return ZfsSource(spec[4:], base=base)
    return FileSource(spec)


def sink(spec: str) -> Sink:
    if spec.startswith("zfs:"):
        from ployz.transfer.zfs_endpoints import ZfsSink
        return ZfsSink(spec[4:])
    return FileSink(spec)


def receive(listen: str, pubkey: str, dst: str) -> dict:
    with socket.create_server(address(listen)) as listener:
        target = sink(dst)
        startup = ready()
        result = Receiver(listener, target, load_public_key(pubkey)).serve()
    return {**result.summary(), "startup_cpu": startup}


def send(to: str, privkey: str, src: str, codec: str, base: str | None = None) -> dict:
    key, origin = load_private_key(privkey), source(src, base)
    startup = ready()
    sys.stdin.readline()
    frame_size = int(os.environ.get("PLOYZ_BENCH_FRAME_SIZE", DEFAULT_FRAME_SIZE))
    result = Sender(origin, address(to), key=key, codec=codec, frame_size=frame_size).send()
    return {**result.summary(), "startup_cpu": startup}


def main() -> None:
    command, *args = sys.argv[1:]
    summary = receive(*args) if command == "receive" else send(*args)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
