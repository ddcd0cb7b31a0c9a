"""Store and forward: `POST /messages` with `Prefer: respond-async` (or `--telemetry-delivery
async`) answers 202 once the message is on disk in the outbox under `--state-dir`, and the outbox
delivers it. Against real sidecars and real hubs: LocalHub's faults take the hub away, `kill -9`
takes the sidecar away, and the outbox's own files are damaged on purpose."""
import json
import os
import re
import shutil
import signal
import struct
import tempfile
import threading
import time

import pytest

from sidecar_support import Sidecar, StandaloneHub

ASYNC = {"Prefer": "respond-async"}
BATCH = {"Content-Type": "application/vnd.microsoft.iothub.json"}


@pytest.fixture
def scratch():
    path = tempfile.mkdtemp(prefix="store-and-forward-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def started(*args, **kwargs):
    return Sidecar(*args, **kwargs).wait_ready()


def finish(sidecar):
    status = sidecar.stop()
    shutil.rmtree(sidecar.data_dir, ignore_errors=True)
    return status


def problem(reply, status, code):
    assert reply.status == status, reply
    assert reply.header("Content-Type") == "application/problem+json", reply
    document = reply.json()
    assert document["status"] == status and document["code"] == code, document
    return document


def outbox(sidecar):
    reply = sidecar.get("/outbox")
    assert reply.status == 200, reply
    return reply.json()


def eventually(condition, timeout=30, what="the condition"):
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.time() < deadline, "{} did not hold within {} s".format(what, timeout)
        time.sleep(0.1)


def received_ids(sidecar, cursor=0, count=None, timeout=60):
    """Message ids the hub received after `cursor`, in order, waiting until there are `count`."""
    ids = []
    deadline = time.time() + timeout
    while True:
        page = sidecar.telemetry(after=cursor, timeout=2)
        ids += [message["messageId"] for message in page["messages"]]
        cursor = page["next"]
        if count is None or len(set(ids)) >= count or time.time() > deadline:
            return ids


def take_the_hub_away(sidecar, seconds):
    """The hub refuses connections for `seconds` and drops the sidecar's: sends wait, then fail."""
    assert sidecar.hub("PUT", "/local/faults", body={"refuseConnectionsSeconds": seconds}).status == 200
    assert sidecar.hub("POST", "/local/devices/{}/disconnect".format(sidecar.device)).status in (200, 202, 204)
    eventually(lambda: sidecar.get("/status").json()["state"] != "connected", 10, "the drop")


def bring_the_hub_back(sidecar):
    sidecar.hub("DELETE", "/local/faults")


def metric(sidecar, name):
    found = re.search(r"^{} (\S+)$".format(re.escape(name)), sidecar.get("/metrics").body.decode(), re.M)
    return float(found.group(1)) if found else None


# ---------------------------------------------------------------- the two modes

def test_sync_is_the_default_and_answers_as_before():
    sidecar = started()
    try:
        reply = sidecar.post("/messages", body=b"sync", headers={"iothub-messageid": "sync-1"})
        assert reply.status == 200 and reply.json() == {"messageId": "sync-1"}
        assert reply.header("Preference-Applied") is None
        report = outbox(sidecar)
        assert report["delivery"] == "sync"
        assert report["messages"] == 0 and report["delivered"] == 0
        assert report["directory"] == os.path.join(sidecar.state_dir, "outbox")
        assert metric(sidecar, "iothub_sidecar_outbox_accepted_total") == 0
        # Preferences that are not respond-async, or only look like it, change nothing.
        for prefer in ("wait=5", "respond-asynchronously", 'foo="x, respond-async"', "handling=lenient; respond-async=1"):
            reply = sidecar.post("/messages", body=b"still sync", headers={"Prefer": prefer})
            assert reply.status == 200, (prefer, reply)
    finally:
        assert finish(sidecar) == 0


def test_respond_async_answers_202_and_the_hub_gets_the_messages_in_order_with_their_ids():
    sidecar = started()
    try:
        cursor = sidecar.telemetry_cursor()
        single = sidecar.post("/messages", body=b"first", headers=dict(ASYNC, **{"iothub-messageid": "async-1", "iothub-app-n": "1"}))
        assert single.status == 202, single
        assert single.header("Preference-Applied") == "respond-async"
        assert single.json() == {"messageId": "async-1"}
        batch = [{"body": "b{}".format(index), "properties": {"iothub-messageid": "async-b{}".format(index)}} for index in range(50)]
        # Several preferences, in any case, over two fields.
        reply = sidecar.request("POST", "/messages", body=json.dumps(batch).encode(),
                                headers=dict(BATCH, Prefer="wait=10, Respond-Async; x=1"))
        assert reply.status == 202, reply
        assert reply.header("Preference-Applied") == "respond-async"
        assert reply.json() == {"results": [{"messageId": "async-b{}".format(index), "status": 202} for index in range(50)]}
        generated = sidecar.post("/messages", body=b"no id", headers=ASYNC)
        assert generated.status == 202
        generated_id = generated.json()["messageId"]
        assert generated_id
        expected = ["async-1"] + ["async-b{}".format(index) for index in range(50)] + [generated_id]
        ids = received_ids(sidecar, cursor, count=len(expected))
        assert [i for i in ids if i in expected] == expected
        eventually(lambda: outbox(sidecar)["delivered"] == len(expected), 10, "the delivered count")
        report = outbox(sidecar)
        assert report["messages"] == 0 and report["bytes"] == 0 and "oldestAgeSeconds" not in report
        assert metric(sidecar, "iothub_sidecar_outbox_accepted_total") == len(expected)
        assert metric(sidecar, "iothub_sidecar_outbox_delivered_total") == len(expected)
    finally:
        assert finish(sidecar) == 0


def test_async_by_default_stores_every_request():
    sidecar = started(["--telemetry-delivery", "async"])
    try:
        reply = sidecar.post("/messages", body=b"x", headers={"iothub-messageid": "default-async"})
        assert reply.status == 202 and reply.json() == {"messageId": "default-async"}
        assert reply.header("Preference-Applied") is None  # nothing was asked for
        assert outbox(sidecar)["delivery"] == "async"
        assert "default-async" in received_ids(sidecar, 0, count=1)
    finally:
        assert finish(sidecar) == 0


def test_a_batch_is_stored_whole_or_not_at_all():
    sidecar = started()
    try:
        take_the_hub_away(sidecar, 30)
        batch = [{"body": "ok-0"}, {"body": "x" * 300_000}, {"body": "ok-2"}]
        refused = sidecar.request("POST", "/messages", body=json.dumps(batch).encode(), headers=dict(BATCH, **ASYNC))
        document = problem(refused, 400, "ValueError")
        assert document["field"] == "[1]" and "entry 1" in document["detail"]
        assert outbox(sidecar)["messages"] == 0
        # A single message over the limit is refused as the synchronous path refuses it.
        problem(sidecar.post("/messages", body=b"x" * 300_000, headers=ASYNC), 413, "ValueError")
        assert outbox(sidecar)["messages"] == 0
        stored = sidecar.request("POST", "/messages", body=json.dumps([{"body": "a"}, {"body": "b"}]).encode(), headers=dict(BATCH, **ASYNC))
        assert stored.status == 202
        assert outbox(sidecar)["messages"] == 2
    finally:
        bring_the_hub_back(sidecar)
        assert finish(sidecar) == 0


# ---------------------------------------------------------------- the hub away

def test_messages_accepted_while_the_hub_is_away_arrive_when_it_is_back():
    sidecar = started()
    try:
        cursor = sidecar.telemetry_cursor()
        take_the_hub_away(sidecar, 4)
        ids = ["away-{}".format(index) for index in range(10)]
        for message_id in ids:
            reply = sidecar.post("/messages", body=message_id.encode(), headers=dict(ASYNC, **{"iothub-messageid": message_id}))
            assert reply.status == 202, reply
        report = outbox(sidecar)
        assert report["messages"] >= 1 and report["oldestAgeSeconds"] >= 0 and report["oldestAcceptedAt"].endswith("Z")
        received = received_ids(sidecar, cursor, count=len(ids))
        assert [i for i in received if i in ids][:len(ids)] == ids
        eventually(lambda: outbox(sidecar)["messages"] == 0, 10, "an empty outbox")
    finally:
        bring_the_hub_back(sidecar)
        assert finish(sidecar) == 0


def test_messages_expire_while_the_hub_is_away_and_are_never_sent():
    sidecar = started(["--outbox-ttl", "2", "--operation-timeout", "1"])
    events = EventReader(sidecar)
    try:
        cursor = sidecar.telemetry_cursor()
        take_the_hub_away(sidecar, 12)
        # The delivery loop takes nothing while the hub is away: all five wait in the outbox and
        # expire there, counted while the hub is still away.
        assert sidecar.post("/messages", body=b"late", headers=dict(ASYNC, **{"iothub-messageid": "late-0"})).status == 202
        time.sleep(0.5)
        for index in range(1, 5):
            assert sidecar.post("/messages", body=b"late", headers=dict(ASYNC, **{"iothub-messageid": "late-{}".format(index)})).status == 202
        eventually(lambda: outbox(sidecar)["expired"] == 5, 30, "five expired messages")
        report = outbox(sidecar)
        assert report["messages"] == 0 and report["timeToLiveSeconds"] == 2
        assert metric(sidecar, "iothub_sidecar_outbox_expired_total") == 5
        expired = events.wait_for(lambda event: event[0] == "outbox" and event[1]["kind"] == "expired")
        assert expired[1]["count"] >= 1 and expired[1]["expired"] >= 1
        bring_the_hub_back(sidecar)
        eventually(lambda: sidecar.get("/status").json()["state"] == "connected", 30, "the reconnection")
        assert sidecar.post("/messages", body=b"fresh", headers={"iothub-messageid": "fresh"}).status == 200
        received = received_ids(sidecar, cursor, count=1)
        assert "fresh" in received and not any(i in received for i in ["late-0", "late-1", "late-2", "late-3", "late-4"]), received
        assert sidecar.output().count("expired before they could be sent") == 1
    finally:
        events.close()
        bring_the_hub_back(sidecar)
        assert finish(sidecar) == 0


def test_a_full_outbox_refuses_with_507_and_takes_messages_again_once_drained():
    sidecar = started(["--outbox-max-bytes", "20000"])
    events = EventReader(sidecar)
    try:
        take_the_hub_away(sidecar, 30)
        accepted, refusal = 0, None
        for index in range(100):
            reply = sidecar.post("/messages", body=b"." * 900, headers=dict(ASYNC, **{"iothub-messageid": "full-{}".format(index)}))
            if reply.status != 202:
                refusal = reply
                break
            accepted += 1
        assert refusal is not None and 10 <= accepted <= 21, accepted
        document = problem(refusal, 507, "OutboxFull")
        assert "20000" in document["detail"]
        report = outbox(sidecar)
        assert report["full"] is True and report["rejected"] >= 1 and report["messages"] == accepted
        assert report["maximumBytes"] == 20000 and report["bytes"] <= 20000 and report["whenFull"] == "reject-new"
        assert metric(sidecar, "iothub_sidecar_outbox_full") == 1
        full = events.wait_for(lambda event: event[0] == "outbox" and event[1]["kind"] == "full")
        assert full[1]["full"] is True
        # Refused again: logged once for the episode.
        problem(sidecar.post("/messages", body=b"." * 900, headers=ASYNC), 507, "OutboxFull")
        assert sidecar.output().count("the outbox is full") == 1
        bring_the_hub_back(sidecar)
        events.wait_for(lambda event: event[0] == "outbox" and event[1]["kind"] == "emptied", timeout=60)
        assert outbox(sidecar)["full"] is False
        assert sidecar.post("/messages", body=b"room again", headers=ASYNC).status == 202
    finally:
        events.close()
        bring_the_hub_back(sidecar)
        assert finish(sidecar) == 0


def test_drop_oldest_counts_what_it_drops_and_delivers_the_newest():
    sidecar = started(["--outbox-max-bytes", "20000", "--outbox-when-full", "drop-oldest"])
    try:
        cursor = sidecar.telemetry_cursor()
        take_the_hub_away(sidecar, 30)
        ids = ["drop-{}".format(index) for index in range(60)]
        for message_id in ids:
            reply = sidecar.post("/messages", body=b"." * 900, headers=dict(ASYNC, **{"iothub-messageid": message_id}))
            assert reply.status == 202, reply
        report = outbox(sidecar)
        assert report["dropped"] > 20 and report["whenFull"] == "drop-oldest", report
        assert metric(sidecar, "iothub_sidecar_outbox_dropped_total") == report["dropped"]
        bring_the_hub_back(sidecar)
        eventually(lambda: outbox(sidecar)["messages"] == 0, 60, "an empty outbox")
        report = outbox(sidecar)
        assert report["delivered"] + report["dropped"] == 60
        received = [i for i in received_ids(sidecar, cursor, count=report["delivered"]) if i.startswith("drop-")]
        assert len(set(received)) == report["delivered"]
        assert received[-1] == "drop-59"
        assert sidecar.output().count("dropping its oldest messages") == 1
    finally:
        bring_the_hub_back(sidecar)
        assert finish(sidecar) == 0


# ---------------------------------------------------------------- the sidecar away

def test_every_message_answered_202_reaches_the_hub_after_kill_9(scratch):
    hub = StandaloneHub("crash-device")
    state_dir = os.path.join(scratch, "state")
    try:
        first = started(hub=hub, device="crash-device", state_dir=state_dir)
        accepted = []
        # Some while the hub takes them, some while it refuses, then the sidecar is killed.
        for index in range(100):
            reply = first.post("/messages", body=b"m", headers=dict(ASYNC, **{"iothub-messageid": "crash-{}".format(index)}))
            assert reply.status == 202
            accepted.append(reply.json()["messageId"])
        take_the_hub_away(first, 3)
        batch = [{"body": "b", "properties": {"iothub-messageid": "crash-b{}".format(index)}} for index in range(200)]
        reply = first.request("POST", "/messages", body=json.dumps(batch).encode(), headers=dict(BATCH, **ASYNC))
        assert reply.status == 202
        accepted += [result["messageId"] for result in reply.json()["results"]]
        assert outbox(first)["messages"] > 0
        first.stop(signal.SIGKILL)
        shutil.rmtree(first.data_dir, ignore_errors=True)
        second = started(hub=hub, device="crash-device", state_dir=state_dir)
        try:
            received = received_ids(second, 0, count=len(accepted), timeout=90)
            assert set(accepted) <= set(received), sorted(set(accepted) - set(received))[:10]
            # Copies are re-sends of messages already accepted, with their ids.
            assert set(received) == set(accepted)
            eventually(lambda: outbox(second)["messages"] == 0, 30, "an empty outbox")
        finally:
            assert finish(second) == 0
    finally:
        hub.stop()
        shutil.rmtree(hub.data_dir, ignore_errors=True)


def test_a_graceful_stop_leaves_what_it_cannot_deliver_on_disk_and_says_so(scratch):
    state_dir = os.path.join(scratch, "state")
    first = started(["--shutdown-timeout", "3"], state_dir=state_dir)
    take_the_hub_away(first, 60)
    ids = ["left-{}".format(index) for index in range(5)]
    for message_id in ids:
        assert first.post("/messages", body=b"x", headers=dict(ASYNC, **{"iothub-messageid": message_id})).status == 202
    began = time.time()
    assert first.stop() == 0
    assert time.time() - began < 15
    lines = [line for line in first.output().splitlines() if "stopping with messages in the outbox" in line]
    assert len(lines) == 1 and "messages=5" in lines[0], first.output()[-3000:]
    second = started(state_dir=state_dir)
    try:
        received = received_ids(second, 0, count=len(ids))
        assert [i for i in received if i in ids][:5] == ids
    finally:
        assert finish(second) == 0
        shutil.rmtree(first.data_dir, ignore_errors=True)


def outbox_segments(state_dir):
    directory = os.path.join(state_dir, "outbox")
    return sorted(os.path.join(directory, name) for name in os.listdir(directory) if name.endswith(".log"))


def frames(data):
    """(offset, length) of each frame of a segment: magic, length, checksum, sequence, payload."""
    found, offset = [], 0
    while offset + 20 <= len(data):
        magic, length = struct.unpack_from("<4sI", data, offset)
        assert magic == b"IDL1"
        found.append((offset, 20 + length))
        offset += 20 + length
    return found


def test_a_damaged_outbox_is_repaired_at_start_and_what_is_readable_is_delivered(scratch):
    state_dir = os.path.join(scratch, "state")
    first = started(state_dir=state_dir)
    take_the_hub_away(first, 60)
    ids = ["kept-{}".format(index) for index in range(10)]
    for message_id in ids:
        assert first.post("/messages", body=b"payload", headers=dict(ASYNC, **{"iothub-messageid": message_id})).status == 202
    first.stop(signal.SIGKILL)
    shutil.rmtree(first.data_dir, ignore_errors=True)
    segment = outbox_segments(state_dir)[-1]
    with open(segment, "rb") as file:
        data = bytearray(file.read())
    layout = frames(data)
    assert len(layout) == 10
    # Garbage over the third message's frame, and half a frame header torn off at the end.
    offset, length = layout[2]
    data[offset + 20:offset + length] = os.urandom(length - 20)
    data += b"IDL1\xff\x00"
    with open(segment, "wb") as file:
        file.write(data)
    second = started(state_dir=state_dir)
    try:
        report = outbox(second)
        assert report["repair"]["quarantinedSpans"] == 1 and report["repair"]["truncatedBytes"] == 6, report
        readable = ids[:2] + ids[3:]
        received = received_ids(second, 0, count=len(readable))
        assert [i for i in received if i in ids] == readable
        assert os.listdir(os.path.join(state_dir, "outbox", "quarantine"))
        assert metric(second, "iothub_sidecar_outbox_quarantined_spans") == 1
        assert "repaired" in second.output()
    finally:
        assert finish(second) == 0


# ---------------------------------------------------------------- the state directory

def test_two_sidecars_cannot_share_a_state_directory(scratch):
    state_dir = os.path.join(scratch, "shared")
    first = started(state_dir=state_dir)
    try:
        second = Sidecar(state_dir=state_dir)
        assert second.process.wait(30) == 1
        output = second.output()
        assert "in use by another iothub-sidecar" in output and state_dir in output, output
        second.stop()
        shutil.rmtree(second.data_dir, ignore_errors=True)
        assert first.get("/readyz").status == 200
    finally:
        assert finish(first) == 0


def test_the_state_directory_is_private_and_local_hub_keeps_its_own(scratch):
    state_dir = os.path.join(scratch, "new", "state")
    sidecar = started(state_dir=state_dir)
    try:
        assert os.stat(state_dir).st_mode & 0o777 == 0o700
        assert os.stat(os.path.join(scratch, "new")).st_mode & 0o777 == 0o700
        assert os.path.isdir(os.path.join(state_dir, "outbox"))
    finally:
        assert finish(sidecar) == 0
    # Without --state-dir, a sidecar with --local-hub keeps its state with the local hub's data.
    sidecar = started(state_dir=False)
    try:
        assert outbox(sidecar)["directory"] == os.path.join(sidecar.data_dir, "sidecar-state", "outbox")
    finally:
        assert finish(sidecar) == 0


@pytest.mark.parametrize("args, message", [
    (["--telemetry-delivery", "sometimes"], "--telemetry-delivery"),
    (["--outbox-when-full", "panic"], "--outbox-when-full"),
    (["--outbox-max-bytes", "0"], "--outbox-max-bytes"),
    (["--outbox-ttl", "0"], "--outbox-ttl"),
    (["--outbox-drain-rate=-1"], "--outbox-drain-rate"),
])
def test_bad_outbox_options_fail_at_startup(args, message):
    sidecar = Sidecar(args)
    try:
        assert sidecar.process.wait(30) == 1
        lines = sidecar.output().strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
    finally:
        sidecar.stop()
        shutil.rmtree(sidecar.data_dir, ignore_errors=True)


class EventReader:
    """Reads `GET /events` on a thread: (name, data) pairs as they come."""

    def __init__(self, sidecar):
        self.connection = sidecar.connection(timeout=120)
        self.connection.request("GET", "/events")
        self.stream = self.connection.getresponse()
        self.events = []
        self.lock = threading.Condition()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        name = None
        try:
            for raw in self.stream:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name:
                    with self.lock:
                        self.events.append((name, json.loads(line[6:])))
                        self.lock.notify_all()
        except (OSError, ValueError, AttributeError):
            pass  # the stream was closed under the reader (close())

    def wait_for(self, matches, timeout=30):
        deadline = time.time() + timeout
        with self.lock:
            while True:
                for event in self.events:
                    if matches(event):
                        return event
                remaining = deadline - time.time()
                assert remaining > 0, "no such event among {}".format(self.events)
                self.lock.wait(remaining)

    def close(self):
        try:
            self.connection.sock.shutdown(2)
        except OSError:
            pass
        self.connection.close()
