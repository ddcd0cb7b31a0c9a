"""IoT Plug and Play with Microsoft's SDKs: a device of azure-iot-device announcing its model id
the way the SDK's Plug and Play samples do (`product_info` set to the DTMI; azure-iot-device 2.x
has no `model_id` keyword), and the sidecar announcing it with `--model-id`; azure-iot-hub reads
it from the twin as `modelId` (its `Twin` model has no attribute for it, so the test reads the
response of the SDK's own get_twin call, `raw=True`). Component telemetry (`$.sub` as a custom property) and a
component command (`<component>*<command>`), as the samples' helper sends and answers them."""
import json
import os
import socket
import subprocess

from azure.iot.device import Message, MethodResponse
from azure.iot.hub.models import CloudToDeviceMethod

from conftest import BINARY, HTTPS_PORT, MQTT_PORT, bounded

MODEL = "dtmi:com:example:TemperatureController;2"


def model_id_in_twin(registry_manager, device_id):
    """The twin's `modelId` as the service SDK's get_twin receives it."""
    raw = registry_manager.protocol.devices.get_twin(device_id, raw=True)
    assert raw.response.status_code == 200
    return raw.response.json()["modelId"]


def test_the_model_id_a_device_announces_is_in_its_twin(hub, registry_manager, connect_device):
    device_id, client, _ = connect_device("pnp", product_info=MODEL)
    assert model_id_in_twin(registry_manager, device_id) == MODEL
    connection = next(c for c in hub.status()["connections"] if c["clientId"] == device_id)
    assert connection["modelId"] == MODEL


def test_a_device_without_a_model_id_has_an_empty_one(registry_manager, connect_device):
    device_id, _, _ = connect_device("not-pnp")
    assert model_id_in_twin(registry_manager, device_id) == ""


def test_component_telemetry_and_command(hub, registry_manager, connect_device):
    device_id, client, _ = connect_device("pnp-component", product_info=MODEL)
    message = Message(json.dumps({"temperature": 21.5}))
    message.content_type, message.content_encoding = "application/json", "utf-8"
    message.custom_properties["$.sub"] = "thermostat1"
    bounded(client.send_message, message, what="send_message")
    [record] = hub.telemetry(device_id, 1)
    assert record["componentName"] == "thermostat1"
    assert record["modelId"] == MODEL
    assert "$.sub" not in record["properties"]

    def on_method(request):
        if request.name == "thermostat1*getMaxMinReport":
            response = MethodResponse.create_from_method_request(request, 200, {"maxTemp": 30, "since": request.payload})
        else:
            response = MethodResponse.create_from_method_request(request, 404, {"error": request.name})
        client.send_method_response(response)

    bounded(setattr, client, "on_method_request_received", on_method, what="enable method requests")
    result = registry_manager.invoke_device_method(device_id, CloudToDeviceMethod(
        method_name="thermostat1*getMaxMinReport", payload="2024-05-01T00:00:00Z", response_timeout_in_seconds=10))
    assert result.status == 200 and result.payload == {"maxTemp": 30, "since": "2024-05-01T00:00:00Z"}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_sidecars_model_id_is_read_by_the_service_sdk(hub, registry_manager, sas_device, tmp_path):
    device_id, _, connection_string = sas_device("pnp-sidecar")
    listen = "127.0.0.1:{}".format(free_port())
    log = open(tmp_path / "sidecar.log", "wb")
    sidecar = subprocess.Popen(
        [BINARY, "serve", "--model-id", MODEL, "--server-verification-cert", hub.ca_path, "--listen", listen,
         "--mqtt-port", str(MQTT_PORT), "--https-port", str(HTTPS_PORT), "--state-dir", str(tmp_path / "state")],
        env=dict(os.environ, IOTHUB_DEVICE_CONNECTION_STRING=connection_string), stdout=log, stderr=subprocess.STDOUT)
    try:
        hub.wait_until(lambda: hub.is_connected(device_id), 30, "the sidecar is connected")
        assert model_id_in_twin(registry_manager, device_id) == MODEL
        assert registry_manager.get_twin(device_id).connection_state == "Connected"
    finally:
        sidecar.terminate()
        assert sidecar.wait(30) == 0, (tmp_path / "sidecar.log").read_text()
        log.close()
