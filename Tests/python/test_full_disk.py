"""The outbox on a real file system that fills up: a 1 MiB tmpfs mounted on the state directory
in a private mount namespace (`unshare -m -r`, so no root is needed where user namespaces are
allowed). The disk fills before the outbox's own limit: 507 InsufficientStorage, no crash, no
damage; once the hub is back and the outbox delivered, the space returns and 202s resume."""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from sidecar_support import Sidecar, StandaloneHub

ASYNC = {"Prefer": "respond-async"}


def namespaces_work():
    probe = subprocess.run(["unshare", "-m", "-r", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


def eventually(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("no " + what)


def test_a_full_disk_answers_507_and_service_resumes_when_space_returns():
    if not namespaces_work():
        pytest.fail("this test needs unshare -m -r (user and mount namespaces); scripts/conformance needs them too")
    scratch = tempfile.mkdtemp(prefix="full-disk-")
    state_dir = os.path.join(scratch, "state")
    os.makedirs(state_dir)
    wrapper = ["unshare", "-m", "-r", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs -o size=1m,mode=0700 tmpfs "$0" && exec "$@"', state_dir]
    hub = StandaloneHub("full-device")
    sidecar = Sidecar(["--outbox-max-bytes", "1000000000"], state_dir=state_dir, wrapper=wrapper, hub=hub, device="full-device").wait_ready()
    try:
        assert sidecar.hub("PUT", "/local/faults", body={"refuseConnectionsSeconds": 600}).status == 200
        assert sidecar.hub("POST", "/local/devices/{}/disconnect".format(sidecar.device)).status in (200, 202, 204)
        eventually(lambda: sidecar.get("/status").json()["state"] != "connected", 10, "drop")
        body = b"x" * 20_000
        accepted = 0
        refusal = None
        for index in range(200):
            reply = sidecar.post("/messages", body=body, headers=dict(ASYNC, **{"iothub-messageid": "full-{}".format(index)}))
            if reply.status == 202:
                accepted += 1
                continue
            refusal = reply
            break
        assert refusal is not None, "a 1 MiB disk took {} messages of 20 kB".format(accepted)
        assert refusal.status == 507, refusal
        assert refusal.json()["code"] == "InsufficientStorage", refusal.json()
        assert 10 <= accepted <= 60, accepted
        # Still serving, and the outbox says what it holds.
        report = sidecar.get("/outbox").json()
        assert report["messages"] == accepted
        assert sidecar.get("/healthz").status == 200
        # The hub comes back: everything accepted is delivered, the space returns.
        sidecar.hub("DELETE", "/local/faults")
        eventually(lambda: sidecar.get("/outbox").json()["messages"] == 0, 60, "empty outbox")
        ids = set()
        after = 0
        while True:
            page = sidecar.telemetry(after=after, timeout=0)
            ids |= {message["messageId"] for message in page["messages"]}
            if not page["messages"]:
                break
            after = page["next"]
        assert {"full-{}".format(index) for index in range(accepted)} <= ids
        for index in range(accepted, accepted + 20):
            reply = sidecar.post("/messages", body=body, headers=dict(ASYNC, **{"iothub-messageid": "again-{}".format(index)}))
            assert reply.status == 202, (index, reply)
        assert sidecar.process.poll() is None
        assert "Fatal" not in sidecar.output()
    finally:
        sidecar.hub("DELETE", "/local/faults")
        sidecar.stop()
        hub.stop()
        shutil.rmtree(sidecar.data_dir, ignore_errors=True)
        shutil.rmtree(hub.data_dir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
