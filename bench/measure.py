"""Run one command and measure it: wall time, CPU time of its process tree, CPU time spent by
the PostgreSQL server on its behalf, and peak RSS.

How:
- Each command is started by a small launcher (`python -S -I`, see _LAUNCHER) that spawns it,
  reaps it with `os.wait4` and reports back; the harness's own memory never shows.
- wall: `time.perf_counter()` around spawn .. reap in the launcher (for our CLI, Python
  start-up included: an operator pays it too).
- CPU and peak RSS: from that `os.wait4`, whose rusage covers the process and
  every descendant it waited for (the kernel folds reaped children into their parent). CPU is
  ru_utime + ru_stime of that whole tree. ru_maxrss is the largest RSS of any single process
  in the tree (the kernel keeps the max, not a sum): for our CLI that is the Python process
  (or a pg_dump/psql it runs, if larger); for a shell pipeline, the largest of its processes.
- server CPU: the postmaster's children (backends, autovacuum, checkpointer, WAL writer) are
  not ours; their CPU is read from /proc: live children's utime+stime plus the postmaster's
  cutime+cstime (children already reaped), before and after. Other load on the cluster would
  count too; the harness runs one command at a time.
"""

from __future__ import annotations

import ast
import os
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    wall_s: float
    cpu_s: float
    server_cpu_s: float
    peak_rss_mb: float
    size_bytes: int | None = None

    def to_json(self) -> dict[str, float | int | None]:
        return asdict(self)


class CommandFailed(RuntimeError):
    pass


class ServerCpu:
    """CPU seconds used so far by a PostgreSQL cluster's server processes."""

    def __init__(self, pgdata: Path) -> None:
        self.pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])

    @staticmethod
    def _fields(pid: int | str) -> list[str] | None:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # Fields after "(comm)"; comm may hold spaces and parentheses.
        return text[text.rindex(")") + 2 :].split()

    def seconds(self) -> float:
        own = self._fields(self.pid)
        if own is None:
            return 0.0
        # After comm: [0]=state [1]=ppid ... [11]=utime [12]=stime [13]=cutime [14]=cstime
        ticks = sum(int(own[i]) for i in (11, 12, 13, 14))
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            fields = self._fields(entry.name)
            if fields is not None and fields[1] == str(self.pid):
                ticks += int(fields[11]) + int(fields[12])
        return ticks / _TICKS


# Started with `python -S -I`: ~9 MB resident. Linux keeps a process's RSS high-water mark
# across exec, so a child forked from the harness (30+ MB) would report at least that much;
# forked from this launcher, at least ~9 MB. It reports the child's wall time and rusage.
_LAUNCHER = """
import os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(out, "w") as handle:
    handle.write(repr((os.waitstatus_to_exitcode(status), wall, ru.ru_utime + ru.ru_stime,
                       ru.ru_maxrss)))
"""


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    server: ServerCpu | None = None,
) -> tuple[Sample, str]:
    """Run argv to completion through the launcher; return its Sample (no size) and its
    stdout. Raise CommandFailed (with the log's tail) on a non-zero exit."""
    out_path = log.with_suffix(".out")
    usage_path = log.with_suffix(".usage")
    launcher = [sys.executable, "-S", "-I", "-c", _LAUNCHER, str(usage_path), *argv]
    with out_path.open("wb") as out, log.open("ab") as err:
        err.write(f"$ {' '.join(argv)}\n".encode())
        err.flush()
        before_server = server.seconds() if server is not None else 0.0
        subprocess.run(
            launcher,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            check=True,
        )
        after_server = server.seconds() if server is not None else 0.0
    code, wall, cpu, maxrss_kb = ast.literal_eval(usage_path.read_text())
    stdout = out_path.read_text(errors="replace")
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise CommandFailed(f"{' '.join(argv[:4])} ... exited {code}\n--- tail of {log}:\n{tail}")
    sample = Sample(
        wall_s=float(wall),
        cpu_s=float(cpu),
        server_cpu_s=max(0.0, after_server - before_server),
        peak_rss_mb=int(maxrss_kb) / 1024,
    )
    return sample, stdout


def median(samples: Sequence[Sample]) -> Sample:
    """The per-field median of several runs (size: the median too; equal in practice)."""
    sizes = [s.size_bytes for s in samples if s.size_bytes is not None]
    return Sample(
        wall_s=statistics.median(s.wall_s for s in samples),
        cpu_s=statistics.median(s.cpu_s for s in samples),
        server_cpu_s=statistics.median(s.server_cpu_s for s in samples),
        peak_rss_mb=statistics.median(s.peak_rss_mb for s in samples),
        size_bytes=int(statistics.median(sizes)) if sizes else None,
    )
