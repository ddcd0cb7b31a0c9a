"""IoT Edge modules: azure-iot-device's IoTHubModuleClient.create_from_edge_environment with the
IOTEDGE_* variables LocalHub gives (GET /local/edge-environment), its SAS tokens signed by
LocalHub's workload API on a unix socket, the hub's CA from the workload's trust bundle; the
module sends telemetry and calls direct methods with invoke_method (HTTPS to the gateway, port
443) on a device and on another module."""
import queue

import pytest
from azure.iot.device import IoTHubModuleClient, Message, MethodResponse

from conftest import EDGE_DEVICE, bounded, unique_id


@pytest.fixture
def edge_module(hub, monkeypatch, device_clients):
    """Registers a module of the Edge device, puts its IOTEDGE_* variables in the environment
    and returns (module_id, client from create_from_edge_environment, connected)."""

    def create(prefix="module"):
        module_id = unique_id(prefix)
        created = hub.request("PUT", "/devices/{}/modules/{}?api-version=2021-04-12".format(EDGE_DEVICE, module_id),
                              json={"deviceId": EDGE_DEVICE, "moduleId": module_id})
        assert created.status_code == 200, created.text
        environment = hub.request("GET", "/local/edge-environment", params={"moduleId": module_id})
        assert environment.status_code == 200, environment.text
        for name, value in environment.json().items():
            monkeypatch.setenv(name, value)
        client = device_clients(IoTHubModuleClient.create_from_edge_environment())
        bounded(client.connect, timeout=30, what="connect")
        client_id = "{}/{}".format(EDGE_DEVICE, module_id)
        hub.wait_until(lambda: hub.is_connected(client_id), 10, "the hub lists {} as connected".format(client_id))
        return module_id, client

    return create


def test_module_from_edge_environment_sends_telemetry(hub, edge_module):
    module_id, client = edge_module("telemetry")
    message = Message('{"temperature": 21.5}', content_encoding="utf-8", content_type="application/json")
    bounded(client.send_message, message, what="send_message")
    records = hub.telemetry(EDGE_DEVICE, 1)
    assert [record.get("moduleId") for record in records] == [module_id]


def test_module_invokes_a_method_on_a_device(hub, edge_module, connect_device):
    _, module = edge_module("invoker")
    device_id, device, _ = connect_device("edge-target")
    seen = queue.Queue()

    def on_method(request):
        seen.put((request.name, request.payload))
        device.send_method_response(MethodResponse.create_from_method_request(request, 201, {"done": request.payload}))

    bounded(setattr, device, "on_method_request_received", on_method, what="enable method requests")
    result = bounded(module.invoke_method, {"methodName": "reboot", "payload": {"delay": 2},
                                            "responseTimeoutInSeconds": 10}, device_id, what="invoke_method")
    assert result == {"status": 201, "payload": {"done": {"delay": 2}}}
    assert seen.get(timeout=5) == ("reboot", {"delay": 2})


def test_module_invokes_a_method_on_another_module(hub, edge_module):
    _, caller = edge_module("caller")
    target_id, target = edge_module("callee")
    bounded(setattr, target, "on_method_request_received",
            lambda request: target.send_method_response(
                MethodResponse.create_from_method_request(request, 200, {"method": request.name})),
            what="enable method requests")
    result = bounded(caller.invoke_method, {"methodName": "setThreshold", "payload": 30,
                                            "responseTimeoutInSeconds": 10}, EDGE_DEVICE, target_id,
                     what="invoke_method")
    assert result == {"status": 200, "payload": {"method": "setThreshold"}}
