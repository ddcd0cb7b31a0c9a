"""Direct methods: azure-iot-hub's invoke_device_method answered by azure-iot-device's
on_method_request_received + send_method_response; 404 for a device that is not connected."""
import queue

import pytest
from azure.iot.device import MethodResponse
from azure.iot.hub.models import CloudToDeviceMethod
from msrest.exceptions import HttpOperationError

from conftest import bounded


def test_invoke_device_method_answered_by_the_device(hub, registry_manager, connect_device):
    device_id, client, _ = connect_device("method")
    requests_seen = queue.Queue()

    def on_method(request):
        requests_seen.put((request.name, request.payload))
        if request.name == "reboot":
            response = MethodResponse.create_from_method_request(
                request, 200, {"rebooting": True, "echo": request.payload, "text": "ok ✓"})
        else:
            response = MethodResponse.create_from_method_request(request, 404, {"error": "no such method"})
        client.send_method_response(response)

    bounded(setattr, client, "on_method_request_received", on_method, what="enable method requests")

    payload = {"delay": 3, "reason": "update & restart", "list": [1, 2, 3]}
    result = registry_manager.invoke_device_method(
        device_id, CloudToDeviceMethod(method_name="reboot", payload=payload, response_timeout_in_seconds=10))
    assert result.status == 200
    assert result.payload == {"rebooting": True, "echo": payload, "text": "ok ✓"}
    assert requests_seen.get(timeout=5) == ("reboot", payload)

    # The device decides the status; a scalar payload travels as JSON too.
    result = registry_manager.invoke_device_method(
        device_id, CloudToDeviceMethod(method_name="selfDestruct", payload="now", response_timeout_in_seconds=10))
    assert result.status == 404
    assert result.payload == {"error": "no such method"}
    assert requests_seen.get(timeout=5) == ("selfDestruct", "now")


def test_invoke_device_method_times_out_when_the_device_does_not_answer(hub, registry_manager, connect_device):
    device_id, client, _ = connect_device("method-silent")
    seen = queue.Queue()
    bounded(setattr, client, "on_method_request_received", lambda request: seen.put(request.name),
            what="enable method requests")
    with pytest.raises(HttpOperationError) as timeout:
        registry_manager.invoke_device_method(
            device_id, CloudToDeviceMethod(method_name="ignored", payload=None, response_timeout_in_seconds=5))
    assert timeout.value.response.status_code == 504
    assert seen.get(timeout=5) == "ignored"


def test_invoke_device_method_on_an_offline_device_is_404(hub, registry_manager, sas_device):
    device_id, _, _ = sas_device("method-offline")
    with pytest.raises(HttpOperationError) as offline:
        registry_manager.invoke_device_method(
            device_id, CloudToDeviceMethod(method_name="reboot", payload={}, response_timeout_in_seconds=5))
    response = offline.value.response
    assert response.status_code == 404
    assert response.headers.get("iothub-errorcode") == "DeviceNotOnline"
    assert not hub.is_connected(device_id)

    # An unknown device is 404 as well, with another error code.
    with pytest.raises(HttpOperationError) as unknown:
        registry_manager.invoke_device_method(
            "no-such-device-" + device_id, CloudToDeviceMethod(method_name="reboot", payload={}, response_timeout_in_seconds=5))
    assert unknown.value.response.status_code == 404
    assert unknown.value.response.headers.get("iothub-errorcode") == "DeviceNotFound"


def test_invoke_device_method_after_the_handler_is_set_to_none_is_404(hub, registry_manager, connect_device):
    """azure-iot-device unsubscribes when on_method_request_received is set to None; the hub
    then answers a call at once with 404 DeviceNotOnline, though the device is connected."""
    device_id, client, _ = connect_device("method-off")
    seen = queue.Queue()
    bounded(setattr, client, "on_method_request_received", lambda request: seen.put(request.name),
            what="enable method requests")
    bounded(setattr, client, "on_method_request_received", None, what="disable method requests")
    with pytest.raises(HttpOperationError) as off:
        registry_manager.invoke_device_method(
            device_id, CloudToDeviceMethod(method_name="reboot", payload={}, response_timeout_in_seconds=60))
    assert off.value.response.status_code == 404
    assert off.value.response.headers.get("iothub-errorcode") == "DeviceNotOnline"
    assert hub.is_connected(device_id)
    assert seen.empty()
