"""Device-to-cloud messages from azure-iot-device's send_message, checked in the hub's telemetry
record (/local/telemetry): system properties, application properties with hostile keys and
values, binary and text bodies; over TLS and over WebSockets; across an injected drop."""
import base64
import datetime
import queue
import threading
import time

from azure.iot.device import IoTHubDeviceClient, Message

from conftest import bounded

HOSTILE = {
    "a&b=c/d %": "a&b=c/d %",
    "percent%41literal": "%41 is not A, %zz is not an escape, 100%",
    "plus+sign": "1+1=2",
    "slash/and\\backslash": "x/y\\z",
    "query?hash#": "?#[]@!$'()*,;",
    "spaces in key": "  leading and trailing  ",
    "unicode-ключ": "значение ✓ 🚀 中文",
    "$.notsystem": "dollar-dot key that is not a system property",
    "iothub-like": "iothub-ack is only hub-to-device",
    "empty": "",
    "quotes\"'": "\"double\" 'single'",
    "tilde~dash-under_dot.": "~-_.",
}


def test_send_message_with_every_kind_of_property(hub, connect_device):
    device_id, client, _ = connect_device("d2c-props")
    expiry = datetime.datetime(2031, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)

    full = Message(bytes(range(256)) * 3, message_id="mid-1 & /%", content_encoding="utf-8",
                   content_type="application/octet-stream; charset=\"binary\"")
    full.correlation_id = "cid=1&x/y"
    full.user_id = "user@example.com/ü"
    full.expiry_time_utc = expiry
    full.custom_properties = dict(HOSTILE)

    text = Message('{"temperature": 21.5, "unit": "°C"}', message_id="mid-2", content_type="application/json",
                   content_encoding="utf-8")
    text.expiry_time_utc = "2032-05-06T07:08:09.000Z"
    text.custom_properties = {"n": 42, "flag": True}  # the SDK sends str() of non-string values

    plain = "just a string, no properties"

    security = Message("security event", message_id="mid-4")
    security.set_as_security_message()

    for message in (full, text, plain, security):
        bounded(client.send_message, message, timeout=20, what="send_message")

    received = hub.telemetry(device_id, 4)
    assert len(received) == 4, received
    first, second, third, fourth = received

    assert base64.b64decode(first["body"]) == bytes(range(256)) * 3
    assert "bodyText" not in first
    assert first["deviceId"] == device_id and "moduleId" not in first
    assert first["messageId"] == "mid-1 & /%"
    assert first["correlationId"] == "cid=1&x/y"
    assert first["userId"] == "user@example.com/ü"
    assert first["contentType"] == "application/octet-stream; charset=\"binary\""
    assert first["contentEncoding"] == "utf-8"
    assert first["expiryTimeUtc"] == expiry.isoformat()
    assert first["properties"] == HOSTILE

    assert second["bodyText"] == '{"temperature": 21.5, "unit": "°C"}'
    assert second["messageId"] == "mid-2"
    assert second["contentType"] == "application/json"
    assert second["contentEncoding"] == "utf-8"
    assert second["expiryTimeUtc"] == "2032-05-06T07:08:09.000Z"
    assert second["properties"] == {"n": "42", "flag": "True"}
    assert "correlationId" not in second and "userId" not in second

    assert third["bodyText"] == plain
    assert third["properties"] == {}
    for absent in ("messageId", "correlationId", "userId", "contentType", "contentEncoding", "expiryTimeUtc", "outputName"):
        assert absent not in third, (absent, third)

    assert fourth["bodyText"] == "security event"
    assert fourth["interfaceId"] == "urn:azureiot:Security:SecurityAgent:1"
    assert fourth["properties"] == {}

    assert [m["sequenceNumber"] for m in received] == sorted(m["sequenceNumber"] for m in received)


def test_websockets_send_and_receive(hub, sas_device, device_clients):
    device_id, _, connection_string = sas_device("wss")
    client = device_clients(IoTHubDeviceClient.create_from_connection_string(
        connection_string, server_verification_cert=hub.ca_pem, websockets=True))
    bounded(client.connect, timeout=30, what="connect over WebSockets")
    assert hub.is_connected(device_id)
    assert hub.transport_of(device_id) == "mqtt-websockets"

    received = queue.Queue()
    bounded(setattr, client, "on_message_received", received.put, what="enable C2D")

    for index in range(3):
        message = Message("over websockets {}".format(index), message_id="ws-{}".format(index))
        message.custom_properties = {"transport": "wss", "a&b": "c=d"}
        bounded(client.send_message, message, timeout=20, what="send_message over WebSockets")
    telemetry = hub.telemetry(device_id, 3)
    assert [m["messageId"] for m in telemetry] == ["ws-0", "ws-1", "ws-2"]
    assert all(m["properties"] == {"transport": "wss", "a&b": "c=d"} for m in telemetry)

    hub.send_cloud_to_device(device_id, "to the websocket".encode(), {"iothub-messageid": "c2d-ws", "iothub-app-k": "v/w"})
    message = received.get(timeout=10)
    assert message.data == b"to the websocket"
    assert message.message_id == "c2d-ws"
    assert message.custom_properties == {"k": "v/w"}


def test_no_telemetry_lost_across_an_injected_connection_drop(hub, connect_device):
    device_id, client, _ = connect_device("drop")
    cloud_to_device = queue.Queue()
    bounded(setattr, client, "on_message_received", cloud_to_device.put, what="enable C2D")
    states = []
    client.on_connection_state_change = lambda: states.append(client.connected)
    # Late PUBACKs keep a publish in flight when the connection drops, so the SDK must resend it.
    hub.set_faults(acknowledgementDelayMilliseconds=100)

    sent = []
    dropped = threading.Event()
    drop_result = {}

    def drop_when_ten_sent():
        deadline = time.monotonic() + 30
        while len(sent) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # mid-publish of the next message
        drop_result["response"] = hub.request("POST", "local/devices/{}/disconnect".format(device_id))
        dropped.set()

    dropper = threading.Thread(target=drop_when_ten_sent, daemon=True)
    dropper.start()
    started = time.monotonic()
    for index in range(50):
        message_id = "drop-{:02d}".format(index)
        bounded(client.send_message, Message("message {}".format(index), message_id=message_id),
                timeout=40, what="send_message {}".format(index))
        sent.append(message_id)
    assert dropped.wait(timeout=10), "the drop was never injected"
    assert drop_result["response"].status_code == 204, drop_result["response"].text
    assert time.monotonic() - started < 60

    telemetry = hub.telemetry(device_id, 50, timeout=15)
    arrived = {m["messageId"] for m in telemetry}
    missing = [message_id for message_id in sent if message_id not in arrived]
    assert not missing, "lost across the drop: {}".format(missing)
    # The SDK saw the drop and reconnected; the hub has the device connected again.
    assert False in states and states[-1] is True, states
    hub.wait_until(lambda: hub.is_connected(device_id), 10, "the device is connected again")

    # The SDK does not subscribe again after reconnecting: the hub kept its subscriptions.
    hub.send_cloud_to_device(device_id, b"after the drop", {"iothub-messageid": "after-drop"})
    try:
        message = cloud_to_device.get(timeout=10)
    except queue.Empty:
        raise AssertionError("no cloud-to-device message after the reconnect: subscriptions were lost")
    assert (message.message_id, message.data) == ("after-drop", b"after the drop")

    # A drop of a device that is not connected is 404.
    hub.clear_faults()
    bounded(client.disconnect, timeout=20, what="disconnect")
    hub.wait_until(lambda: not hub.is_connected(device_id), 10, "the device is disconnected")
    assert hub.request("POST", "local/devices/{}/disconnect".format(device_id)).status_code == 404
