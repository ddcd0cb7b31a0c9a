"""The sidecar as an IoT Edge module: `serve` with the IOTEDGE_* variables LocalHub gives
(GET /local/edge-environment) and nothing else, its SAS tokens signed by the hub's workload API
on a unix socket; POST /invoke/{deviceId}[/{moduleId}] calls direct methods through the hub,
answered by other sidecars' GET /methods."""
import os
import threading
import time

import pytest

from sidecar_support import API_VERSION, Sidecar, StandaloneHub

EDGE_DEVICE = "edge-1"


@pytest.fixture(scope="module")
def edge_hub():
    directory = os.path.join(os.environ.get("TMPDIR", "/tmp"), "edge-{}".format(os.getpid()))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    hub = StandaloneHub(
        "dev-1", extra_args=["--edge-device", EDGE_DEVICE, "--edge-workload-socket", os.path.join(directory, "workload.sock")])
    yield hub
    hub.stop()


def module_environment(helper, module_id):
    """Registers a module of the Edge device; its IOTEDGE_* variables."""
    created = helper.hub("PUT", "/devices/{}/modules/{}?api-version={}".format(EDGE_DEVICE, module_id, API_VERSION),
                         body={"deviceId": EDGE_DEVICE, "moduleId": module_id})
    assert created.status == 200, created
    reply = helper.hub("GET", "/local/edge-environment?moduleId=" + module_id)
    assert reply.status == 200, reply
    return reply.json()


def module_sidecar(hub, environment, extra_args=()):
    # No credential, no CA file: both come from the Edge environment.
    return Sidecar(hub=hub, identity_args=list(extra_args), ca_file=False, env=environment).wait_ready()


def answer_next_method(sidecar, status, payload):
    """Long-polls the sidecar for a method request in the background and answers it."""
    def run():
        request = sidecar.get("/methods?timeout=30", timeout=40)
        assert request.status == 200, request
        thread.request = request.json()
        answer = sidecar.post("/methods/{}/response".format(thread.request["requestId"]),
                              body={"status": status, "payload": payload})
        assert answer.status == 204, answer
    thread = threading.Thread(target=run, daemon=True)
    thread.request = None
    thread.start()
    return thread


def invoke(caller, path, body, timeout=10):
    """POST /invoke; again while the hub answers 404 because the target has not subscribed to
    method requests yet (it does so just after it connects), for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        reply = caller.post(path, body=body, timeout=40)
        if reply.status != 404 or time.monotonic() > deadline:
            return reply
        time.sleep(0.2)


def test_the_edge_environment_gives_the_module_identity(edge_hub):
    device = Sidecar(hub=edge_hub, device="dev-1").wait_ready()
    try:
        environment = module_environment(device, "filter")
        assert environment["IOTEDGE_DEVICEID"] == EDGE_DEVICE
        assert environment["IOTEDGE_MODULEID"] == "filter"
        assert environment["IOTEDGE_WORKLOADURI"].startswith("unix:///")
        module = module_sidecar(edge_hub, environment)
        try:
            status = module.get("/status").json()
            assert status["identity"]["deviceId"] == EDGE_DEVICE
            assert status["identity"]["moduleId"] == "filter"
            assert status["identity"]["authentication"] == "edgeWorkload"
            cursor = device.telemetry_cursor()
            sent = module.post("/messages", body=b"21.5", headers={"Content-Type": "text/plain"})
            assert sent.status == 200, sent
            reply = device.hub("GET", "/local/telemetry?after={}&timeout=5&deviceId={}".format(cursor, EDGE_DEVICE))
            assert [m["moduleId"] for m in reply.json()["messages"]] == ["filter"]
        finally:
            module.stop()
    finally:
        device.stop()


def test_invoke_calls_a_method_on_a_device_and_on_a_module(edge_hub):
    device = Sidecar(hub=edge_hub, device="dev-1").wait_ready()
    caller = target = None
    try:
        caller = module_sidecar(edge_hub, module_environment(device, "caller"), ["--edge-environment"])
        target = module_sidecar(edge_hub, module_environment(device, "target"))

        answering = answer_next_method(device, 201, {"rebooting": True})
        reply = invoke(caller, "/invoke/dev-1", {"methodName": "reboot", "payload": {"delay": 5},
                                                 "responseTimeoutInSeconds": 20})
        answering.join(40)
        assert reply.status == 200, reply
        assert reply.json() == {"status": 201, "payload": {"rebooting": True}}
        assert answering.request["methodName"] == "reboot"
        assert answering.request["payload"] == {"delay": 5}

        answering = answer_next_method(target, 200, "ok")
        reply = invoke(caller, "/invoke/{}/target".format(EDGE_DEVICE), {"methodName": "setThreshold", "payload": 30})
        answering.join(40)
        assert reply.status == 200, reply
        assert reply.json() == {"status": 200, "payload": "ok"}
        assert answering.request["payload"] == 30

        # The hub's 404 for a target that is not connected, as a problem document.
        reply = caller.post("/invoke/nobody", body={"methodName": "reboot"})
        assert reply.status == 404, reply
        assert reply.header("Content-Type").startswith("application/problem+json")
        assert reply.json()["code"] == "ServiceError"
        # Bad requests never reach the hub.
        for body in ({"payload": 1}, {"methodName": ""}, {"methodName": "m", "responseTimeoutInSeconds": 301}, [1]):
            reply = caller.post("/invoke/dev-1", body=body)
            assert reply.status == 400, (body, reply)
            assert reply.json()["code"] == "ValueError"
        # A device's sidecar cannot invoke methods (the Python SDK's module client only).
        reply = device.post("/invoke/dev-1", body={"methodName": "reboot"})
        assert reply.status == 409, reply
        assert reply.json()["code"] == "ClientError"
    finally:
        for sidecar in (caller, target, device):
            if sidecar is not None:
                sidecar.stop()


def test_edge_environment_without_the_variables_is_refused(edge_hub, tmp_path):
    environment = {name: "" for name in ("IOTEDGE_WORKLOADURI", "IOTEDGE_MODULEID")}
    sidecar = Sidecar(hub=edge_hub, identity_args=["--edge-environment"], ca_file=False, env=environment)
    assert sidecar.process.wait(30) != 0
    sidecar.stop()
    assert "IOTEDGE_WORKLOADURI" in sidecar.output()
