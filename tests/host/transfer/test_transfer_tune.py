"""``ployzctl transfer tune``: its recommendation follows the link. The only timing-dependent
fact checked is the flip itself, with margins wide enough for a loaded 2-core machine: zstd at
level 19 compresses about a MB/s per thread, loopback carries tens of MB/s or more (codec none
must win), and a probe limited to 50 kB/s is far below what level 19 keeps up with on text
(zstd must win)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.host.transfer.transfer_data import make_data

PLOYZCTL = [sys.executable, "-m", "ployzctl", "transfer"]


def tune(tmp_path: Path, *extra: str) -> dict:
    """One tune run against a fresh ``transfer receive --file`` serving its link probe."""
    receiver = subprocess.Popen([*PLOYZCTL, "receive", "--listen", "127.0.0.1:0", "--file",
                                 str(tmp_path / "probe.bin"), "--trust",
                                 str(tmp_path / "keys" / "transfer.pub"), "--wait-timeout",
                                 "60"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    try:
        assert receiver.stderr is not None
        match = re.search(r"listening on (\S+)", receiver.stderr.readline())
        assert match
        done = subprocess.run([*PLOYZCTL, "tune", "--to", match.group(1), "--key",
                               str(tmp_path / "keys" / "transfer.key"), "--sample",
                               str(tmp_path / "sample.txt"), "--level", "19", "--json", *extra],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert receiver.wait(timeout=60) == 0
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    return json.loads(done.stdout)


def test_recommendation_flips_to_zstd_when_the_link_is_limited(tmp_path: Path) -> None:
    subprocess.run([*PLOYZCTL, "keygen", str(tmp_path / "keys")], check=True,
                   capture_output=True)
    (tmp_path / "sample.txt").write_bytes(make_data("text", 1 << 20))
    fast = tune(tmp_path)
    slow = tune(tmp_path, "--bwlimit", "50k")
    assert fast["recommended"]["codec"] == "none", fast
    assert slow["recommended"]["codec"] == "zstd", slow
    assert slow["recommended"]["level"] == 19
