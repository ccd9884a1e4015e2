"""Runs one fuzz harness for a bounded time: writes its seeds into the corpus, runs libFuzzer
(through atheris) in a child process, and says whether it found anything.

``make fuzz`` runs each harness for ``FUZZ_SECONDS`` with a corpus kept under build/fuzz, so a
long run starts where the last one stopped; ``make test`` runs each for ~20 s from the seeds
alone (test_fuzz_bounded.py). A finding is a non-zero exit of the harness; libFuzzer writes the
input to the artifacts directory (``crash-*``, ``timeout-*``, ``oom-*``), and a crash that is
fixed should then go under tests/fuzz/regressions/NAME/, which every run replays first.

``--asan`` then replays the whole corpus once over ``ployz._xfer`` built with AddressSanitizer,
for memory errors that did not crash the normal build (``make fuzz`` does).

Run: ``python tests/fuzz/run.py frames|handshake|dns [--seconds N] [--work DIR] [--asan]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HARNESSES = {"frames": HERE / "fuzz_frames.py", "handshake": HERE / "fuzz_handshake.py",
             "dns": HERE / "fuzz_dns.py"}
# libFuzzer's settings per harness: a frame input holds a few whole frames of up to 64 KiB
MAX_LEN = {"frames": 1 << 17, "handshake": 1 << 14, "dns": 1 << 12}
PER_INPUT_TIMEOUT = 30  # s; each input takes milliseconds, so this only catches real hangs


@dataclass(frozen=True)
class Result:
    name: str
    returncode: int
    artifacts: list[Path]
    log: Path
    runs: int

    @property
    def found(self) -> bool:
        return self.returncode != 0 or bool(self.artifacts)

    def summary(self) -> str:
        state = "FOUND" if self.found else "clean"
        lines = [f"fuzz {self.name}: {state}, {self.runs} inputs (log {self.log})"]
        lines += [f"  {path}" for path in self.artifacts]
        return "\n".join(lines)


def _runs(log: str) -> int:
    """The number of inputs libFuzzer reports having run ("Done N runs" or its last status)."""
    for line in reversed(log.splitlines()):
        if line.startswith("Done ") and " runs " in line:
            return int(line.split()[1])
        if line.startswith("#") and line[1:].split()[0].isdigit():
            return int(line[1:].split()[0])
    return 0


def run(name: str, seconds: int, work: Path, extra: tuple[str, ...] = (), *,
        env: dict[str, str] | None = None, corpus: Path | None = None) -> Result:
    """Fuzzes harness ``name`` for ``seconds`` with its corpus and artifacts under ``work``."""
    sys.path.insert(0, str(HERE))
    import seeds

    corpus = corpus or work / "corpus" / name
    artifacts = work / "artifacts" / name
    artifacts.mkdir(parents=True, exist_ok=True)
    seeds.write(name, corpus)
    before = set(artifacts.iterdir())
    corpora = [str(corpus)]
    regressions = HERE / "regressions" / name
    if regressions.is_dir():
        corpora.append(str(regressions))
    log_path = work / f"{name}.log"
    limit = [f"-max_total_time={seconds}"] if seconds else []
    command = [sys.executable, str(HARNESSES[name]), *corpora, *limit,
               f"-timeout={PER_INPUT_TIMEOUT}", f"-max_len={MAX_LEN[name]}",
               "-rss_limit_mb=4096", "-print_final_stats=1",
               f"-artifact_prefix={artifacts}/", *extra]
    env = dict(os.environ, **(env or {}), PYTHONPATH=os.pathsep.join(
        [str(HERE), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with log_path.open("w") as log:
        # libFuzzer stops by itself at max_total_time; the margin covers loading the corpus,
        # and a harness stuck past it counts as a hang
        try:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  cwd=ROOT, timeout=seconds + 120, check=False)
            returncode = done.returncode
        except subprocess.TimeoutExpired:
            returncode = -1
    text = log_path.read_text(errors="replace")
    new = sorted(set(artifacts.iterdir()) - before)
    return Result(name, returncode, new, log_path, _runs(text))


def build_asan(work: Path) -> Path:
    """``ployz._xfer`` compiled with AddressSanitizer (gcc's), beside the normal build, from
    the same sources; rebuilt when they are newer."""
    out = work / "asan" / "_xfer.so"
    sources = [ROOT / "native" / "xfer.pyx", ROOT / "native" / "xfer_core.h",
               *sorted((ROOT / "native" / "xfer").glob("*.h"))]
    if out.exists() and all(src.stat().st_mtime < out.stat().st_mtime for src in sources):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    c_file = out.with_suffix(".c")
    subprocess.run([sys.executable, "-m", "cython", "-3", "--module-name", "ployz._xfer",
                    str(sources[0]), "-o", str(c_file)], check=True)
    libraries = next((line.split("=", 1)[1].split() for line in sources[0].read_text().splitlines()
                      if line.startswith("# distutils: libraries")), [])
    include = sysconfig.get_paths()["include"]
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-g", "-fsanitize=address",
                    "-fno-omit-frame-pointer", f"-I{include}", f"-I{ROOT / 'native'}",
                    str(c_file), "-o", str(out), *(f"-l{lib}" for lib in libraries)],
                   check=True)
    return out


def asan_replay(name: str, work: Path) -> Result:
    """Runs the corpus (seeds, what fuzzing added, the regressions) once through the harness
    over the AddressSanitizer build: memory errors that did not crash the normal build. Only a
    replay: gcc's ASan runtime takes over the coverage hooks, so it cannot guide fuzzing."""
    library = build_asan(work)
    runtime = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True).stdout.strip()
    env = {"PLOYZ_FUZZ_XFER": str(library), "LD_PRELOAD": runtime,
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1"}
    return run(name, 0, work / "asan", ("-runs=0",), env=env,
               corpus=work / "corpus" / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(HARNESSES))
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "fuzz")
    parser.add_argument("--asan", action="store_true",
                        help="then replay the corpus over an AddressSanitizer build")
    parser.add_argument("libfuzzer", nargs="*", help="more libFuzzer flags, after --")
    args = parser.parse_args()
    results = [run(args.name, args.seconds, args.work, tuple(args.libfuzzer))]
    if args.asan:
        results.append(asan_replay(args.name, args.work))
    for result in results:
        print(result.summary())
    sys.exit(1 if any(result.found for result in results) else 0)


if __name__ == "__main__":
    main()
