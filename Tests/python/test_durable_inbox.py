"""The durable cloud-to-device inbox: what the sidecar acknowledged to the hub is on disk, and so
are its locks, delivery counts and completions. `kill -9`, then a restart on the same state
directory: every message not completed comes back with its delivery count one higher; no
completed one comes back. Against a real sidecar and a LocalHub in its own process."""
import os
import shutil
import signal
import tempfile
import time

import pytest

from sidecar_support import Sidecar, StandaloneHub

DEVICE = "inbox-device"


@pytest.fixture
def scratch():
    path = tempfile.mkdtemp(prefix="durable-inbox-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def take(sidecar, timeout=10):
    """The next inbox message: (message id, lock token, delivery count), or None."""
    reply = sidecar.get("/inbox?timeout={}".format(timeout))
    if reply.status == 204:
        return None
    assert reply.status == 200, reply
    return reply.header("iothub-messageid"), reply.header("ETag").strip('"'), int(reply.header("iothub-deliverycount"))


def hub_queue_is_empty(sidecar):
    """Whether the hub has let go of every message (it keeps one until it is acknowledged)."""
    reply = sidecar.hub("GET", "/devices/{}?api-version=2021-04-12".format(DEVICE))
    assert reply.status == 200, reply
    return reply.json().get("cloudToDeviceMessageCount", 0) == 0


def eventually(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("no " + what)


def test_messages_locks_and_completions_survive_kill_9(scratch):
    hub = StandaloneHub(DEVICE)
    state_dir = os.path.join(scratch, "state")
    try:
        first = Sidecar(hub=hub, device=DEVICE, state_dir=state_dir).wait_ready()
        for index in range(8):
            first.send_c2d(body="c2d {}".format(index).encode(), headers={"iothub-messageid": "c-{}".format(index)})
        eventually(lambda: hub_queue_is_empty(first), 30, "acknowledgement of every message by the sidecar")
        # c-0 and c-1 completed; c-2 leased (count 1) and abandoned, then leased again (count 2);
        # c-3 leased once and left locked; the rest never touched.
        for expected in ("c-0", "c-1"):
            message_id, token, count = take(first)
            assert (message_id, count) == (expected, 1)
            assert first.request("DELETE", "/inbox/{}".format(token)).status == 204
        message_id, token, count = take(first)
        assert (message_id, count) == ("c-2", 1)
        assert first.post("/inbox/{}/abandon".format(token)).status == 204
        message_id, token, count = take(first)
        assert (message_id, count) == ("c-2", 2)
        message_id, _, count = take(first)
        assert (message_id, count) == ("c-3", 1)
        first.stop(signal.SIGKILL)
        shutil.rmtree(first.data_dir, ignore_errors=True)

        second = Sidecar(hub=hub, device=DEVICE, state_dir=state_dir).wait_ready()
        try:
            seen = []
            while True:
                message = take(second, timeout=2)
                if message is None:
                    break
                seen.append(message)
                assert second.request("DELETE", "/inbox/{}".format(message[1])).status == 204
            assert [(message_id, count) for message_id, _, count in seen] == [
                ("c-2", 3), ("c-3", 2), ("c-4", 1), ("c-5", 1), ("c-6", 1), ("c-7", 1)], seen
        finally:
            assert second.stop() == 0
            shutil.rmtree(second.data_dir, ignore_errors=True)
        # And completed ones stay completed after a clean stop too.
        third = Sidecar(hub=hub, device=DEVICE, state_dir=state_dir).wait_ready()
        try:
            assert take(third, timeout=1) is None
        finally:
            assert third.stop() == 0
            shutil.rmtree(third.data_dir, ignore_errors=True)
    finally:
        hub.stop()
        shutil.rmtree(hub.data_dir, ignore_errors=True)


def test_a_clean_stop_keeps_what_the_app_has_not_completed(scratch):
    hub = StandaloneHub(DEVICE)
    state_dir = os.path.join(scratch, "state")
    try:
        first = Sidecar(hub=hub, device=DEVICE, state_dir=state_dir).wait_ready()
        for index in range(5):
            first.send_c2d(body=b"x", headers={"iothub-messageid": "s-{}".format(index)})
        eventually(lambda: hub_queue_is_empty(first), 30, "acknowledgement of every message by the sidecar")
        assert first.stop() == 0
        shutil.rmtree(first.data_dir, ignore_errors=True)
        second = Sidecar(hub=hub, device=DEVICE, state_dir=state_dir).wait_ready()
        try:
            ids = []
            while True:
                message = take(second, timeout=1)
                if message is None:
                    break
                ids.append(message[0])
            assert ids == ["s-{}".format(index) for index in range(5)]
        finally:
            assert second.stop() == 0
            shutil.rmtree(second.data_dir, ignore_errors=True)
    finally:
        hub.stop()
        shutil.rmtree(hub.data_dir, ignore_errors=True)
