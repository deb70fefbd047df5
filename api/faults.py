"""Fault points: test-only places where an operation can be made to die.

`point(name)` sits at the moments a crash matters most (after the dump, mid-archive, before and
after the archive is published, mid-upload, mid-load, around the restore's swap and commit). It
does nothing unless NEXUS_FAULT_POINT names it, read at each call: then the process sends itself
SIGKILL (NEXUS_FAULT_ACTION=kill, the default) or SIGSTOP (`stop`: a test inspects it, then kills
it). Tests use it to prove that a restart recovers from a death at each point
(tests/operations/test_fault_points.py). Production refuses to start with NEXUS_FAULT_POINT set.
"""

from __future__ import annotations

import os
import signal

from api.errors import ConfigError

POINT_VARIABLE = "NEXUS_FAULT_POINT"
ACTION_VARIABLE = "NEXUS_FAULT_ACTION"
ACTIONS = ("kill", "stop")

POINTS: dict[str, str] = {
    "backup.after_dump": "pg_dump has finished; the dump is not yet in the archive",
    "backup.mid_archive": "the first uploads file is in the temporary archive",
    "backup.before_publish": "the archive is complete and fsynced, not yet under its final name",
    "backup.after_publish": "the archive and its sidecar are published; the record is not updated",
    "sync.mid_upload": "the first part of a multipart upload has been acknowledged",
    "restore.mid_load": "psql has been sent the dump; COMMIT has not been sent",
    "restore.before_swap": "the database is loaded (not committed); the uploads are not swapped",
    "restore.before_commit": "the uploads are swapped in; COMMIT has not been sent",
}


def _signal(action: str) -> signal.Signals:
    if action not in ACTIONS:
        raise ConfigError(f"{ACTION_VARIABLE}={action!r} is not one of {', '.join(ACTIONS)}")
    return signal.SIGKILL if action == "kill" else signal.SIGSTOP


def check(environ: dict[str, str] | None = None, *, production: bool = False) -> None:
    """Refuse (ConfigError) a NEXUS_FAULT_POINT that production must not start with or that
    names no fault point; nothing when it is unset."""
    env = os.environ if environ is None else environ
    wanted = env.get(POINT_VARIABLE)
    if not wanted:
        return
    if production or env.get("NEXUS_ENV") == "production":
        raise ConfigError(
            f"{POINT_VARIABLE} is set, but fault points are for tests only: unset it when "
            "NEXUS_ENV=production"
        )
    if wanted not in POINTS:
        raise ConfigError(
            f"{POINT_VARIABLE}={wanted!r} is not a fault point; known: {', '.join(sorted(POINTS))}"
        )
    _signal(env.get(ACTION_VARIABLE, "kill"))


def point(name: str) -> None:
    """Die here if NEXUS_FAULT_POINT says so (see the module's text); else nothing."""
    wanted = os.environ.get(POINT_VARIABLE)
    if not wanted:
        return
    check()
    if name not in POINTS:
        raise ValueError(f"fault point {name!r} is not registered in api.faults.POINTS")
    if wanted == name:
        os.kill(os.getpid(), _signal(os.environ.get(ACTION_VARIABLE, "kill")))
