"""Every temporary file and directory the tests make (tempfile in this process, TMPDIR in the
processes they start) goes into one directory of this session, removed when it ends: a test
run leaves nothing behind in /tmp."""
import os
import shutil
import tempfile

import pytest

_SESSION_TEMP = tempfile.mkdtemp(prefix="iothub-sidecar-tests-")
tempfile.tempdir = _SESSION_TEMP
os.environ["TMPDIR"] = _SESSION_TEMP


@pytest.fixture(scope="session", autouse=True)
def _remove_session_temp():
    yield
    shutil.rmtree(_SESSION_TEMP, ignore_errors=True)


def pytest_configure(config):
    # pytest's own tmp_path directories go there too (not /tmp/pytest-of-USER).
    if config.option.basetemp is None:
        config.option.basetemp = os.path.join(_SESSION_TEMP, "pytest")
