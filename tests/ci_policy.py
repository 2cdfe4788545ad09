"""Under CI=true a skipped test fails the run, naming the skip's reason: CI runs every test
(the job tests skip locally without espeak-ng, and a CI run without them must not pass).
tests/conftest.py uses this hook; locally, `-ra` lists each skip with its reason."""

import os

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if under_ci() and report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"
