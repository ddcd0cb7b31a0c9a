"""IoT Plug and Play through the sidecar, each convention end to end: the real sidecar and its
embedded LocalHub, with what the hub saw checked on the hub's side.

* the model id (`--model-id`, `IOTHUB_MODEL_ID`): announced in the MQTT CONNECT, recorded by
  the hub, shown as `modelId` in the twin and on the hub's telemetry, and in `GET /status`;
* component telemetry: `iothub-componentname` (`$.sub` on the wire);
* component properties: `__t: "c"` in a reported patch;
* writable-property acknowledgements: `ac`, `av`, `ad`, `value`;
* component commands: the direct method `<component>*<command>`."""
import json
import os
import subprocess
import time

import pytest

from sidecar_support import API_VERSION, BINARY, Sidecar, quote

MODEL = "dtmi:com:example:TemperatureController;2"
# A device that is never reached: the options are refused before the sidecar connects.
UNREACHED = {"IOTHUB_DEVICE_CONNECTION_STRING": "HostName=hub.invalid;DeviceId=d;SharedAccessKey=c2VjcmV0LWtleQ=="}


def refused(args):
    run = subprocess.run([BINARY, "serve", "--listen", "127.0.0.1:1"] + args, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, **UNREACHED))
    assert run.returncode != 0
    assert "c2VjcmV0LWtleQ" not in run.stderr
    return run.stderr


@pytest.fixture(scope="module")
def sidecar():
    instance = Sidecar(["--model-id", MODEL]).wait_ready()
    yield instance
    assert instance.stop() == 0, instance.output()


def twin(sidecar):
    reply = sidecar.hub("GET", "/twins/{}?api-version={}".format(sidecar.device, API_VERSION))
    assert reply.status == 200, reply
    return reply.json()


def sent_and_seen(sidecar, body, headers):
    cursor = sidecar.telemetry_cursor()
    reply = sidecar.post("/messages", body=body, headers=headers)
    assert reply.status == 200, reply
    deadline = time.time() + 20
    while time.time() < deadline:
        page = sidecar.telemetry(after=cursor, timeout=5)
        for message in page["messages"]:
            if message.get("bodyText") == body.decode():
                return message
        cursor = page["next"]
    raise AssertionError("the hub did not record the message")


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_the_model_id_is_announced_and_in_the_twin(how):
    sidecar = Sidecar(["--model-id", MODEL] if how == "flag" else [], env={"IOTHUB_MODEL_ID": MODEL} if how == "environment" else {})
    try:
        sidecar.wait_ready()
        assert twin(sidecar)["modelId"] == MODEL
        assert sidecar.get("/status").json()["modelId"] == MODEL
        connections = sidecar.hub("GET", "/local/status").json()["connections"]
        connection = next(connection for connection in connections if connection["clientId"] == sidecar.device)
        assert connection["modelId"] == MODEL
        # The user agent is the sidecar's own: the model id is not product info.
        assert connection["userAgent"].startswith("iothub-sidecar/") and "dtmi" not in connection["userAgent"]
    finally:
        assert sidecar.stop() == 0, sidecar.output()


def test_without_a_model_id_the_twin_has_an_empty_one():
    sidecar = Sidecar()
    try:
        sidecar.wait_ready()
        assert twin(sidecar)["modelId"] == ""
        assert "modelId" not in sidecar.get("/status").json()
    finally:
        assert sidecar.stop() == 0, sidecar.output()


@pytest.mark.parametrize("model_id, reason", [
    ("dtmi:com:example:Thermostat", "';' and a version"),
    ("com:example:Thermostat;1", "start with 'dtmi:'"),
    ("dtmi:com:1example:Thermostat;1", "segment"),
    ("dtmi:com:example_:Thermostat;1", "segment"),
    ("dtmi:com:example:Thermostat;01", "version"),
    ("dtmi:com::Thermostat;1", "segment"),
    ("dtmi:com:example:Thermostat;1#frag", "version"),
])
def test_a_model_id_that_is_not_a_dtmi_is_refused_at_start(model_id, reason):
    stderr = refused(["--model-id", model_id])
    assert "model_id" in stderr and reason in stderr, stderr


def test_model_id_and_a_dtmi_product_info_together_are_refused():
    stderr = refused(["--model-id", MODEL, "--product-info", "dtmi:com:example:Other;1"])
    assert "product_info" in stderr and "model_id" in stderr, stderr


def test_component_telemetry_carries_the_component_name(sidecar):
    seen = sent_and_seen(sidecar, b'{"temperature":21.5}', {
        "Content-Type": "application/json", "iothub-contentencoding": "utf-8", "iothub-componentname": "thermostat1",
        "iothub-app-unit": "celsius"})
    assert seen["componentName"] == "thermostat1"
    assert seen["modelId"] == MODEL
    assert "%24.sub=thermostat1" in seen["rawProperties"]
    assert seen["properties"] == {"unit": "celsius"}

    # The property by its wire name, as the Python samples set it, is the same thing.
    raw = sent_and_seen(sidecar, b'{"temperature":22}', {"iothub-app-$.sub": "thermostat2"})
    assert raw["componentName"] == "thermostat2" and "$.sub" not in raw["properties"]

    # The root component's telemetry has none.
    root = sent_and_seen(sidecar, b'{"workingSet":42}', {"Content-Type": "application/json"})
    assert "componentName" not in root and root["modelId"] == MODEL


def test_component_telemetry_in_a_batch(sidecar):
    cursor = sidecar.telemetry_cursor()
    batch = [{"body": '{"temperature":30}', "properties": {"iothub-componentname": "thermostat2"}},
             {"body": '{"workingSet":7}', "properties": {}}]
    reply = sidecar.post("/messages", body=json.dumps(batch).encode(),
                         headers={"Content-Type": "application/vnd.microsoft.iothub.json"})
    assert reply.status == 200, reply
    messages = []
    deadline = time.time() + 20
    while len(messages) < 2 and time.time() < deadline:
        page = sidecar.telemetry(after=cursor, timeout=5)
        messages += page["messages"]
        cursor = page["next"]
    assert [message.get("componentName") for message in messages] == ["thermostat2", None]


@pytest.mark.parametrize("headers, field", [
    ({"iothub-componentname": ""}, "iothub-componentname"),
    ({"iothub-componentname": "thermo stat"}, "iothub-componentname"),
    ({"iothub-componentname": "1thermostat"}, "iothub-componentname"),
    ({"iothub-componentname": "thermostat1", "iothub-app-$.sub": "thermostat2"}, "iothub-app-$.sub"),
])
def test_a_bad_component_name_is_refused(sidecar, headers, field):
    reply = sidecar.post("/messages", body=b"{}", headers=headers)
    assert reply.status == 400, reply
    problem = reply.json()
    assert problem["code"] == "ValueError" and field in problem["detail"], problem


def test_component_properties_are_plain_reported_patches(sidecar):
    patch = {"thermostat1": {"__t": "c", "maxTempSinceLastReboot": 38.2},
             "deviceInformation": {"__t": "c", "manufacturer": "Contoso", "totalMemory": 32}}
    reply = sidecar.request("PATCH", "/twin", body=patch)
    assert reply.status == 200, reply
    reported = twin(sidecar)["properties"]["reported"]
    assert reported["thermostat1"]["__t"] == "c" and reported["thermostat1"]["maxTempSinceLastReboot"] == 38.2
    assert {key: value for key, value in reported["deviceInformation"].items() if key != "$metadata"} == patch["deviceInformation"]
    # The device reads back what it reported.
    device_view = sidecar.get("/twin").json()["reported"]
    assert device_view["thermostat1"]["__t"] == "c"


def test_writable_property_of_a_component_is_acknowledged(sidecar):
    since = sidecar.get("/twin/desired?since=0").json()["version"]
    desired = sidecar.set_desired({"thermostat2": {"__t": "c", "targetTemperature": 22.5}})
    version = desired["properties"]["desired"]["$version"]
    update = sidecar.get("/twin/desired?since={}&timeout=20".format(since)).json()
    assert update["version"] == version
    patch = update["patches"][-1] if update.get("patches") else update["desired"]
    assert patch["thermostat2"] == {"__t": "c", "targetTemperature": 22.5}

    ack = {"thermostat2": {"__t": "c", "targetTemperature": {
        "value": 22.5, "ac": 200, "av": version, "ad": "Successfully executed patch"}}}
    assert sidecar.request("PATCH", "/twin", body=ack).status == 200
    reported = twin(sidecar)["properties"]["reported"]["thermostat2"]["targetTemperature"]
    assert {key: reported[key] for key in ("value", "ac", "av", "ad")} == ack["thermostat2"]["targetTemperature"]

    # A root writable property: no component marker, the same acknowledgement.
    desired = sidecar.set_desired({"targetHumidity": 40})
    version = desired["properties"]["desired"]["$version"]
    assert sidecar.request("PATCH", "/twin", body={"targetHumidity": {"value": 40, "ac": 200, "av": version}}).status == 200
    assert twin(sidecar)["properties"]["reported"]["targetHumidity"]["av"] == version


def test_component_command_round_trips(sidecar):
    call = sidecar.invoke_method("thermostat1*getMaxMinReport", payload="2024-05-01T00:00:00Z")
    request = sidecar.get("/methods?timeout=20&name=" + quote("thermostat1*getMaxMinReport")).json()
    assert request["methodName"] == "thermostat1*getMaxMinReport"
    assert request["payload"] == "2024-05-01T00:00:00Z"
    answer = {"maxTemp": 30, "minTemp": 21.5, "avgTemp": 25, "startTime": "2024-05-01T00:00:00Z",
              "endTime": "2024-05-01T01:00:00Z"}
    reply = sidecar.post("/methods/{}/response".format(quote(request["requestId"])), body={"status": 200, "payload": answer})
    assert reply.status == 204, reply
    call.join(40)
    assert call.reply.json() == {"status": 200, "payload": answer}
