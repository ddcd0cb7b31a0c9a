"""The hub's own events on the built-in endpoint, as IoT Hub routes them: twin change
notifications (`twinChangeEvents`), device lifecycle events (`deviceLifecycleEvents`) and
connection state events (`deviceConnectionStateEvents`), read from `/local/telemetry` with
Microsoft's device SDK (azure-iot-device) and service SDK (azure-iot-hub) causing them.

In IoT Hub these sources reach the built-in endpoint only through a route of their own (the
fallback route carries device messages alone); LocalHub's equivalent is `PUT /local/routes`.
The scenarios mirror the reported-property tests of Microsoft's own end-to-end suite, which
observe the device's patches through twin change notifications.
"""
import base64
import json
import re
import time
from datetime import datetime

import pytest
from azure.iot.hub.models import Twin, TwinProperties

from conftest import bounded

EVENT_SOURCES = ["twinChangeEvents", "deviceLifecycleEvents", "deviceConnectionStateEvents"]


@pytest.fixture
def routes(hub):
    """Routes every event source to the built-in endpoint for the test; restores the routes
    the hub had afterwards (they are hub-wide, and other tests count telemetry)."""
    before = hub.request("GET", "local/routes").json()["messageSources"]
    response = hub.request("PUT", "local/routes", json={"messageSources": EVENT_SOURCES})
    assert response.status_code == 200, response.text
    assert response.json() == {"messageSources": ["Telemetry"] + EVENT_SOURCES}
    yield
    restored = hub.request("PUT", "local/routes", json={"messageSources": before})
    assert restored.status_code == 200, restored.text


def events(hub, device_id, source, count, timeout=15, settle=0):
    """Reads the events of `source` about `device_id` until `count` arrived, then waits
    `settle` seconds more for any that should not come; returns them all."""
    found, cursor = [], 0
    deadline = time.monotonic() + timeout
    settled_at = None
    while True:
        remaining = deadline - time.monotonic()
        if len(found) >= count and settled_at is None:
            settled_at = time.monotonic() + settle
        if settled_at is not None:
            remaining = settled_at - time.monotonic()
        if remaining <= 0:
            return found
        response = hub.request("GET", "local/telemetry", params={
            "after": cursor, "deviceId": device_id, "messageSource": source,
            "timeout": max(1, min(int(remaining), 5))}, timeout=remaining + 15)
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["messages"])
        cursor = page["next"]


def body_of(event):
    return json.loads(base64.b64decode(event["body"]))


def assert_event_shape(event, device_id, source, schema, operation, module_id=None):
    assert event["messageSource"] == source
    assert event["deviceId"] == device_id
    assert event.get("moduleId") == module_id
    assert event["contentType"] == "application/json"
    assert event["contentEncoding"] == "utf-8"
    assert event["userId"] == "localhost"
    assert event["correlationId"]
    properties = event["properties"]
    assert properties["hubName"] == "localhost"
    assert properties["deviceId"] == device_id
    assert properties.get("moduleId") == module_id
    assert properties["iothub-message-schema"] == schema
    assert properties["opType"] == operation
    stamp = datetime.fromisoformat(properties["operationTimestamp"].replace("Z", "+00:00"))
    assert abs(time.time() - stamp.timestamp()) < 120
    assert json.loads(event["bodyText"]) == body_of(event)


def without_metadata(properties):
    return {key: value for key, value in properties.items() if key != "$metadata"}


def test_no_event_reaches_the_built_in_endpoint_without_a_route(hub, connect_device):
    assert hub.request("GET", "local/routes").json() == {"messageSources": ["Telemetry"]}
    device_id, client, _ = connect_device("no-route")
    bounded(client.patch_twin_reported_properties, {"seen": False}, timeout=20, what="patch_twin_reported_properties")
    bounded(client.send_message, "telemetry", timeout=20, what="send_message")
    messages = hub.telemetry(device_id, 1)
    assert [message["messageSource"] for message in messages] == ["Telemetry"]
    time.sleep(1)
    response = hub.request("GET", "local/telemetry", params={"deviceId": device_id})
    assert [message["messageSource"] for message in response.json()["messages"]] == ["Telemetry"]


def test_routes_refuse_unknown_sources(hub):
    response = hub.request("PUT", "local/routes", json={"messageSources": ["twinChangeEvents", "digitalTwinChangeEvents"]})
    assert response.status_code == 400, response.text
    assert response.headers["iothub-errorcode"] == "ArgumentInvalid"
    assert hub.request("GET", "local/routes").json() == {"messageSources": ["Telemetry"]}
    response = hub.request("GET", "local/telemetry", params={"messageSource": "Telemetry,bogus"})
    assert response.status_code == 400, response.text


def test_reported_patch_gives_a_twin_change_notification(hub, routes, registry_manager, connect_device):
    device_id, client, _ = connect_device("notify-reported")
    patch = {"temperature": 21.5, "firmware": {"version": "1.2.3"}}
    bounded(client.patch_twin_reported_properties, patch, timeout=20, what="patch_twin_reported_properties")
    [event] = events(hub, device_id, "twinChangeEvents", 1, settle=1)
    assert_event_shape(event, device_id, "twinChangeEvents", "twinChangeNotification", "updateTwin")
    twin = registry_manager.get_twin(device_id)
    reported_version = twin.properties.reported["$version"]
    assert body_of(event) == {"version": twin.version, "properties": {"reported": dict(patch, **{"$version": reported_version})}}

    # Clearing a property: the notification carries the null, as the e2e suite's "clear" test reads it.
    bounded(client.patch_twin_reported_properties, {"temperature": None}, timeout=20, what="patch_twin_reported_properties")
    event = events(hub, device_id, "twinChangeEvents", 2)[1]
    twin = registry_manager.get_twin(device_id)
    assert body_of(event) == {
        "version": twin.version, "properties": {"reported": {"temperature": None, "$version": reported_version + 1}}}
    assert "temperature" not in twin.properties.reported


def test_reported_patch_sent_while_dropped_gives_exactly_one_notification(hub, routes, connect_device):
    # Microsoft's e2e test drops the device's outgoing packets with iptables; LocalHub's
    # discard-traffic fault does the same from the hub's side: the connection stays open, but
    # nothing on it reaches the hub until the device's keep-alive gives up and it reconnects.
    device_id, client, _ = connect_device("notify-dropped", keep_alive=5)
    bounded(client.patch_twin_reported_properties, {"beforeDrop": 1}, timeout=20, what="patch_twin_reported_properties")
    assert len(events(hub, device_id, "twinChangeEvents", 1)) == 1
    first_connection = hub.status()["lastTelemetrySequenceNumber"]
    assert hub.request("POST", "local/devices/{}/discard-traffic".format(device_id)).status_code == 204

    bounded(client.patch_twin_reported_properties, {"afterDrop": 1}, timeout=60, what="patch_twin_reported_properties")
    found = events(hub, device_id, "twinChangeEvents", 2, settle=3)
    assert len(found) == 2, found
    assert body_of(found[1])["properties"]["reported"] == {"afterDrop": 1, "$version": 3}
    # It was sent again on a new connection, after the first one was given up.
    reconnections = hub.request("GET", "local/telemetry", params={
        "after": first_connection, "deviceId": device_id, "messageSource": "deviceConnectionStateEvents"}).json()["messages"]
    assert [event["properties"]["opType"] for event in reconnections][:2] == ["deviceDisconnected", "deviceConnected"]


def test_service_update_and_replace_give_notifications(hub, routes, registry_manager, connect_device):
    device_id, client, _ = connect_device("notify-desired")
    etag = registry_manager.get_twin(device_id).etag
    updated = registry_manager.update_twin(
        device_id, Twin(tags={"site": "lab"}, properties=TwinProperties(desired={"interval": 5})), etag)
    [update] = events(hub, device_id, "twinChangeEvents", 1)
    assert_event_shape(update, device_id, "twinChangeEvents", "twinChangeNotification", "updateTwin")
    assert body_of(update) == {
        "version": updated.version, "tags": {"site": "lab"},
        "properties": {"desired": {"interval": 5, "$version": updated.properties.desired["$version"]}}}

    replaced = registry_manager.replace_twin(
        device_id, Twin(tags={"site": "home"}, properties=TwinProperties(desired={"mode": "eco"})), updated.etag)
    replace = events(hub, device_id, "twinChangeEvents", 2)[1]
    assert_event_shape(replace, device_id, "twinChangeEvents", "twinChangeNotification", "replaceTwin")
    body = body_of(replace)
    assert body["deviceId"] == device_id
    assert body["etag"] == replaced.etag
    assert body["version"] == replaced.version
    assert body["tags"] == {"site": "home"}
    assert body["properties"]["desired"] == without_metadata(replaced.properties.desired)
    assert body["properties"]["reported"] == without_metadata(replaced.properties.reported)


def test_module_twin_changes_name_the_module(hub, routes, registry_manager, sas_device):
    device_id, _, _ = sas_device("notify-module")
    module = registry_manager.create_module_with_sas(device_id, "m1", None, None, None)
    assert module.module_id == "m1"
    twin = registry_manager.update_module_twin(device_id, "m1", Twin(properties=TwinProperties(desired={"x": 1})), "*")
    [event] = events(hub, device_id, "twinChangeEvents", 1)
    assert_event_shape(event, device_id, "twinChangeEvents", "twinChangeNotification", "updateTwin", module_id="m1")
    assert body_of(event)["properties"]["desired"] == {"x": 1, "$version": twin.properties.desired["$version"]}


def test_identity_lifecycle_events(hub, routes, registry_manager, sas_device):
    device_id, _, _ = sas_device("lifecycle")
    registry_manager.create_module_with_sas(device_id, "m1", None, None, None)
    created = events(hub, device_id, "deviceLifecycleEvents", 2)
    assert len(created) == 2
    assert_event_shape(created[0], device_id, "deviceLifecycleEvents", "deviceLifecycleNotification", "createDeviceIdentity")
    assert_event_shape(created[1], device_id, "deviceLifecycleEvents", "deviceLifecycleNotification", "createDeviceIdentity",
                       module_id="m1")
    twin = registry_manager.get_twin(device_id)
    device_body = body_of(created[0])
    assert device_body["deviceId"] == device_id and "moduleId" not in device_body
    assert device_body["etag"] == twin.etag
    assert device_body["version"] == twin.version
    assert device_body["properties"] == {"desired": {"$version": 1}, "reported": {"$version": 1}}
    assert body_of(created[1])["moduleId"] == "m1"

    registry_manager.delete_device(device_id)
    deleted = events(hub, device_id, "deviceLifecycleEvents", 4, settle=1)[2:]
    assert [(event["properties"]["opType"], event.get("moduleId")) for event in deleted] == [
        ("deleteDeviceIdentity", "m1"), ("deleteDeviceIdentity", None)]


def test_connection_state_events_carry_increasing_sequence_numbers(hub, routes, connect_device):
    device_id, client, _ = connect_device("connection-state")
    bounded(client.disconnect, timeout=20, what="disconnect")
    hub.wait_until(lambda: not hub.is_connected(device_id), 10, "the device is disconnected")
    bounded(client.connect, timeout=30, what="connect")
    found = events(hub, device_id, "deviceConnectionStateEvents", 3, settle=1)
    assert [event["properties"]["opType"] for event in found] == ["deviceConnected", "deviceDisconnected", "deviceConnected"]
    for event in found:
        assert_event_shape(event, device_id, "deviceConnectionStateEvents", "deviceConnectionStateNotification",
                           event["properties"]["opType"])
    numbers = [body_of(event)["sequenceNumber"] for event in found]
    assert all(re.fullmatch(r"[0-9A-F]{64}", number) for number in numbers), numbers
    assert numbers == sorted(numbers) and len(set(numbers)) == 3, numbers


def test_telemetry_and_its_stream_filter_by_message_source(hub, routes, connect_device):
    device_id, client, _ = connect_device("filter")
    start = hub.status()["lastTelemetrySequenceNumber"]
    bounded(client.send_message, "one", timeout=20, what="send_message")
    bounded(client.patch_twin_reported_properties, {"k": 1}, timeout=20, what="patch_twin_reported_properties")
    assert len(events(hub, device_id, "twinChangeEvents", 1)) == 1

    everything = hub.request("GET", "local/telemetry", params={"after": start, "deviceId": device_id}).json()["messages"]
    assert [message["messageSource"] for message in everything] == ["Telemetry", "twinChangeEvents"]
    only_telemetry = hub.request("GET", "local/telemetry", params={
        "after": start, "deviceId": device_id, "messageSource": "Telemetry"}).json()["messages"]
    assert [message["bodyText"] for message in only_telemetry] == ["one"]
    two = hub.request("GET", "local/telemetry", params={
        "after": start, "deviceId": device_id, "messageSource": "Telemetry,twinChangeEvents"}).json()["messages"]
    assert [message["messageSource"] for message in two] == ["Telemetry", "twinChangeEvents"]

    with hub.request("GET", "local/telemetry/stream", params={
            "after": start, "deviceId": device_id, "messageSource": "twinChangeEvents"}, stream=True, timeout=20) as stream:
        assert stream.status_code == 200
        data = None
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                data = json.loads(line[len("data: "):])
                break
    assert data["messageSource"] == "twinChangeEvents"
    assert body_of(data)["properties"]["reported"]["k"] == 1
