"""Makes the resume-token fixture of the micro-benchmarks from a real interrupted receive.

Runs inside the ZFS VM (the checkout is read-only there, so the token lands in
``$PLOYZ_REPORTS``; copy it to ``bench/micro/fixtures/resume_token.txt``):

    python -m ployz.sandbox.vm run -- python -m bench.micro.resume_token_fixture

A real token rather than a hand-built one, so the benchmark parses exactly what OpenZFS writes.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path


def sh(command: str) -> str:
    return subprocess.run(["bash", "-c", command], check=True, capture_output=True,
                          text=True).stdout.strip()


def main() -> None:
    image = Path(tempfile.mkdtemp()) / "pool.img"
    sh(f"truncate -s 512M {image}")
    sh(f"zpool create -f -m /run/tokpool tokpool {image}")
    try:
        sh("zfs create tokpool/src && head -c 32M /dev/urandom > /run/tokpool/src/blob && sync")
        sh("zfs snapshot tokpool/src@a")
        # cut the stream half way: the receive fails and leaves a resumable partial state
        subprocess.run(["bash", "-c", "zfs send tokpool/src@a | head -c 16M | "
                        "zfs receive -s tokpool/dst"], check=False, capture_output=True)
        token = sh("zfs get -H -o value receive_resume_token tokpool/dst")
    finally:
        sh("zpool destroy -f tokpool")
        image.unlink(missing_ok=True)
    if not token or token == "-":
        raise SystemExit("no resume token was left behind")
    out = Path(os.environ.get("PLOYZ_REPORTS", ".")) / "resume_token.txt"
    out.write_text(token + "\n")
    print(out)


if __name__ == "__main__":
    main()
