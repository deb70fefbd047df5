"""api.restores.runner.check_version: an archive from a newer or unknown app version is
refused unless forced, and the refusal says how to override it.
"""

from __future__ import annotations

import pytest

from api.restores.runner import check_version


@pytest.mark.parametrize(
    ("archive_version", "current", "force", "allowed"),
    [
        ("2.0.0", "1.9.0", False, False),
        ("1.10.0", "1.9.0", False, False),
        ("2.0.0", "1.9.0", True, True),
        ("1.9.0", "1.9.0", False, True),
        ("1.2.0", "1.9.0", False, True),
        ("1.9.0", "1.10.0", False, True),
        ("1.0.0", None, False, False),
        ("1.0.0", None, True, True),
        (None, "1.0.0", False, True),
        (None, None, False, True),
    ],
)
def test_check_version_refuses_a_newer_or_unknown_version_unless_forced(
    archive_version: str | None, current: str | None, force: bool, allowed: bool
) -> None:
    reason = check_version(archive_version, current, force)
    assert (reason is None) == allowed, f"check_version -> {reason!r}"
    if reason is not None:
        assert "--force" in reason, "a refusal must say how to override it"
        assert archive_version is not None
        assert archive_version in reason, "a refusal must name the archive's version"


def test_check_version_refusal_names_app_version_when_it_is_unset() -> None:
    reason = check_version("1.0.0", None, False)
    assert reason is not None
    assert "APP_VERSION is not set" in reason
