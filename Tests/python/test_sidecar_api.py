"""The sidecar's REST API over real HTTP, against a sidecar connected to a real LocalHub (its
embedded one): every endpoint, the documented error statuses, long-polls, events, metrics.
What the hub saw is checked on the hub's side (its /local and service APIs)."""
import base64
import json
import os
import re
import socket
import threading
import time

import pytest
import yaml

from sidecar_support import Sidecar, drain, quote

SPEC_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "openapi", "sidecar.yaml")


@pytest.fixture(scope="module")
def sidecar():
    instance = Sidecar().wait_ready()
    yield instance
    assert instance.stop() == 0, instance.output()


@pytest.fixture
def clean(sidecar):
    drain(sidecar)
    return sidecar


def problem(reply, status, code):
    assert reply.status == status, reply
    assert reply.header("Content-Type") == "application/problem+json", reply
    document = reply.json()
    assert document["status"] == status and document["code"] == code, document
    assert document["type"] == "urn:iothub-sidecar:problem:" + code
    assert document["title"] and document["detail"]
    return document


# ---------------------------------------------------------------- operations and status

def test_health_readiness_and_status(sidecar):
    assert sidecar.get("/healthz").json() == {"status": "ok"}
    assert sidecar.get("/readyz").json() == {"status": "ready", "state": "connected"}
    status = sidecar.get("/status").json()
    assert status["identity"] == {"hostName": "localhost", "deviceId": "sidecar-device", "authentication": "symmetricKey"}
    assert status["state"] == "connected"
    assert status["transport"] == "mqtt" and "proxy" not in status
    assert status["newSasTokenRequired"] is False
    assert status["since"].endswith("Z") and status["tokenExpiry"].endswith("Z")


def test_openapi_document_is_the_file(sidecar):
    reply = sidecar.get("/openapi.yaml")
    assert reply.status == 200
    assert reply.header("Content-Type") == "application/yaml"
    with open(SPEC_PATH, "rb") as spec:
        assert reply.body == spec.read()


def test_every_documented_operation_is_served_and_nothing_else(sidecar):
    with open(SPEC_PATH) as spec:
        document = yaml.safe_load(spec)
    samples = {"{lockToken}": "0f8fad5b-d9cb-469f-a165-70867728950e", "{requestId}": "no-such-request", "{blobName}": "x.txt"}
    for path, operations in document["paths"].items():
        concrete = path
        for name, value in samples.items():
            concrete = concrete.replace(name, value)
        documented = {method.upper() for method in operations if method in ("get", "post", "put", "patch", "delete")}
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if method in documented and path in ("/events",):
                continue  # a stream that never ends; covered by test_events_stream
            if method in documented and path in ("/disconnect",):
                continue  # would disconnect the shared sidecar; covered by test_disconnect_and_connect
            query = "?timeout=0" if path in ("/inbox", "/methods", "/twin/desired") else ""
            body = b"" if method != "PUT" or path != "/blob/{blobName}" else b"x"
            reply = sidecar.request(method, concrete + query, body=body, headers={"Content-Type": "application/octet-stream"} if body else {})
            if method in documented:
                assert not (reply.status in (404, 405) and b"no such endpoint" in reply.body), (method, path, reply)
                assert reply.status != 405, (method, path, reply)
            else:
                assert reply.status == 405, (method, path, reply)
                assert set(reply.header("Allow").split(", ")) == documented
    problem(sidecar.get("/no/such/path"), 404, "NotFound")


def test_metrics(sidecar):
    sidecar.post("/messages", body=b"metrics")
    reply = sidecar.get("/metrics")
    assert reply.status == 200
    assert reply.header("Content-Type").startswith("text/plain; version=0.0.4")
    text = reply.body.decode()
    for family in ["iothub_sidecar_connected 1", "iothub_sidecar_messages_sent_total", "iothub_sidecar_inbox_messages",
                   "iothub_sidecar_method_requests_total", "iothub_sidecar_desired_patches_total",
                   "iothub_sidecar_connection_state_changes_total{state=\"connected\"}",
                   'iothub_sidecar_http_requests_total{method="POST",route="/messages",status="200"}']:
        assert family in text, family


# ---------------------------------------------------------------- telemetry

def test_send_message_with_properties_reaches_the_hub(sidecar):
    cursor = sidecar.telemetry_cursor()
    reply = sidecar.post("/messages", body=b'{"temp":21.5}', headers={
        "Content-Type": "application/json", "iothub-contentencoding": "utf-8", "iothub-app-Alert": "high level",
        "iothub-messageid": "m-1", "iothub-correlationid": "c-1", "iothub-userid": "u-1", "iothub-expiry": "2030-01-01T00:00:00Z"})
    assert reply.status == 200 and reply.json() == {"messageId": "m-1"}
    message = sidecar.telemetry(after=cursor)["messages"][0]
    assert message["bodyText"] == '{"temp":21.5}'
    assert message["messageId"] == "m-1" and message["correlationId"] == "c-1" and message["userId"] == "u-1"
    assert message["contentType"] == "application/json" and message["contentEncoding"] == "utf-8"
    assert message["expiryTimeUtc"] == "2030-01-01T00:00:00Z"
    assert message["properties"] == {"Alert": "high level"}


def test_send_message_generates_an_id_and_takes_any_bytes(sidecar):
    cursor = sidecar.telemetry_cursor()
    reply = sidecar.post("/messages", body=bytes(range(256)), headers={"Content-Type": "application/octet-stream"})
    message_id = reply.json()["messageId"]
    assert len(message_id) == 36 and message_id == message_id.lower()
    message = sidecar.telemetry(after=cursor)["messages"][0]
    assert base64.b64decode(message["body"]) == bytes(range(256))
    assert message["messageId"] == message_id
    empty = sidecar.post("/messages", body=b"")
    assert empty.status == 200


@pytest.mark.parametrize("headers, field", [
    ({"iothub-colour": "blue"}, "iothub-colour"),
    ({"iothub-app-": "x"}, "iothub-app-"),
    ({"iothub-outputname": "out1"}, "iothub-outputname"),
    ({"iothub-messageid": ""}, "iothub-messageid"),
])
def test_send_message_rejects_bad_property_headers(sidecar, headers, field):
    document = problem(sidecar.post("/messages", body=b"x", headers=headers), 400, "ValueError")
    assert document["field"] == field


def test_send_message_rejects_a_property_given_twice(sidecar):
    connection = sidecar.connection()
    connection.putrequest("POST", "/messages")
    connection.putheader("iothub-app-a", "1")
    connection.putheader("iothub-app-a", "2")
    connection.putheader("Content-Length", "1")
    connection.endheaders(b"x")
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 400 and body["code"] == "ValueError"


def test_message_too_large_and_body_too_large(sidecar):
    problem(sidecar.post("/messages", body=b"x" * 262_145), 413, "ValueError")
    problem(sidecar.post("/messages", body=b"x" * (16 * 1024 * 1024 + 1)), 413, "ValueError")


def test_batch_is_sent_entry_by_entry(sidecar):
    cursor = sidecar.telemetry_cursor()
    batch = [
        {"body": '{"temp":21}', "properties": {"iothub-app-alert": "low", "iothub-contenttype": "application/json"}},
        {"body": base64.b64encode(b"\x00\x01\x02").decode(), "base64Encoded": True, "properties": {"iothub-messageid": "b2"}},
        {"body": "x" * 262_145},
    ]
    reply = sidecar.post("/messages", body=json.dumps(batch).encode(), headers={"Content-Type": "application/vnd.microsoft.iothub.json"})
    assert reply.status == 200, reply
    results = reply.json()["results"]
    assert [result["status"] for result in results] == [200, 200, 413]
    assert results[1]["messageId"] == "b2"
    assert results[2]["error"]["code"] == "ValueError"
    messages = sidecar.telemetry(after=cursor)["messages"]
    assert [message.get("messageId") for message in messages] == [results[0]["messageId"], "b2"]
    assert messages[0]["properties"] == {"alert": "low"} and messages[0]["contentType"] == "application/json"
    assert base64.b64decode(messages[1]["body"]) == b"\x00\x01\x02"


SECURITY_INTERFACE_ID = "urn:azureiot:Security:SecurityAgent:1"


def test_security_messages_reach_the_hub_marked(sidecar):
    """`iothub-interfaceid` with the security agent's id (the Python SDK's
    `Message.set_as_security_message()`): as a header, in a batch, and stored and forwarded."""
    cursor = sidecar.telemetry_cursor()
    assert sidecar.post("/messages", body=b"single", headers={"iothub-interfaceid": SECURITY_INTERFACE_ID}).status == 200
    batch = [{"body": "in a batch", "properties": {"iothub-interfaceid": SECURITY_INTERFACE_ID}}, {"body": "plain"}]
    reply = sidecar.post("/messages", body=json.dumps(batch).encode(), headers={"Content-Type": "application/vnd.microsoft.iothub.json"})
    assert [result["status"] for result in reply.json()["results"]] == [200, 200], reply
    stored = sidecar.post("/messages", body=b"stored", headers={"iothub-interfaceid": SECURITY_INTERFACE_ID, "Prefer": "respond-async"})
    assert stored.status == 202, stored
    received = {}
    deadline = time.time() + 30
    while len(received) < 4 and time.time() < deadline:
        page = sidecar.telemetry(after=cursor, timeout=5)
        received.update({message["bodyText"]: message for message in page["messages"]})
        cursor = page["next"]
    assert sorted(received) == ["in a batch", "plain", "single", "stored"]
    for body in ("single", "in a batch", "stored"):
        assert received[body]["interfaceId"] == SECURITY_INTERFACE_ID, received[body]
        assert received[body]["properties"] == {}
    assert "interfaceId" not in received["plain"]


def test_only_the_security_interface_id_is_taken(sidecar):
    cursor = sidecar.telemetry_cursor()
    document = problem(sidecar.post("/messages", body=b"x", headers={"iothub-interfaceid": "urn:example:Other:1"}), 400, "ValueError")
    assert document["field"] == "iothub-interfaceid" and SECURITY_INTERFACE_ID in document["detail"]
    batch = [{"body": "x", "properties": {"iothub-interfaceid": ""}}]
    document = problem(sidecar.post("/messages", body=json.dumps(batch).encode(), headers={"Content-Type": "application/vnd.microsoft.iothub.json"}), 400, "ValueError")
    assert document["field"] == "[0].properties.iothub-interfaceid"
    assert sidecar.telemetry(after=cursor, timeout=0)["messages"] == []


@pytest.mark.parametrize("body", [b"{}", b"[]", b"not json", b'[{"body":"!!","base64Encoded":true}]', b'[{"body":"x","properties":{"colour":"red"}}]'])
def test_bad_batches_send_nothing(sidecar, body):
    cursor = sidecar.telemetry_cursor()
    problem(sidecar.post("/messages", body=body, headers={"Content-Type": "application/vnd.microsoft.iothub.json"}), 400, "ValueError")
    assert sidecar.telemetry(after=cursor, timeout=0)["messages"] == []


# ---------------------------------------------------------------- cloud-to-device

def test_inbox_locks_abandons_and_completes(clean):
    sidecar = clean
    sidecar.send_c2d(b"hello", headers={"iothub-messageid": "c2d-1", "iothub-app-Color": "blue", "iothub-contenttype": "text/plain",
                                        "iothub-correlationid": "corr", "iothub-ack": "full"})
    first = sidecar.get("/inbox?timeout=10")
    assert first.status == 200 and first.body == b"hello"
    assert first.header("Content-Type") == "text/plain"
    assert first.header("iothub-messageid") == "c2d-1" and first.header("iothub-app-Color") == "blue"
    assert first.header("iothub-correlationid") == "corr" and first.header("iothub-ack") == "full"
    assert first.header("iothub-to") == "/devices/sidecar-device/messages/deviceBound"
    assert first.header("iothub-deliverycount") == "1"
    token = first.header("ETag").strip('"')
    assert sidecar.get("/inbox?timeout=0").status == 204  # locked: not handed out twice
    assert sidecar.post("/inbox/{}/abandon".format(token)).status == 204
    second = sidecar.get("/inbox?timeout=0")
    assert second.status == 200 and second.header("iothub-deliverycount") == "2"
    new_token = second.header("ETag").strip('"')
    assert new_token != token
    problem(sidecar.request("DELETE", "/inbox/" + token), 404, "NotFound")
    assert sidecar.request("DELETE", "/inbox/" + new_token).status == 204
    problem(sidecar.request("DELETE", "/inbox/" + new_token), 404, "NotFound")
    problem(sidecar.post("/inbox/{}/abandon".format(new_token)), 404, "NotFound")


# Application properties no HTTP header can carry exactly: names with a space or non-ASCII
# letters, values with control characters or spaces at either end. LocalHub takes them in one
# JSON header (`localhub-properties`), as IoT Hub's service takes them over AMQP.
AWKWARD_PROPERTIES = {
    "name with space": "x",
    "t\u00e9l\u00e9m\u00e9trie": "\u00e9t\u00e9",
    "ctl": "a\x01b\x7fc\nd",
    "pad": " padded\t",
    "plain": "caf\u00e9 ok",
}
AWKWARD_SYSTEM_HEADERS = {
    "iothub-messageid": "awkward-1", "iothub-correlationid": "corr-1", "iothub-userid": "user-1",
    "iothub-ack": "full", "iothub-expiry": "2099-01-01T00:00:00.000Z", "iothub-contenttype": "text/plain",
    "iothub-contentencoding": "utf-8",
    "localhub-properties": json.dumps(AWKWARD_PROPERTIES).replace("\x7f", "\\u007f"),
}


def expect_every_property(document):
    assert document["properties"] == AWKWARD_PROPERTIES, document
    assert document["messageId"] == "awkward-1" and document["correlationId"] == "corr-1", document
    assert document["userId"] == "user-1" and document["ack"] == "full", document
    assert document["expiryTimeUtc"] == "2099-01-01T00:00:00.000Z", document
    assert document["to"] == "/devices/sidecar-device/messages/deviceBound", document
    assert document["contentType"] == "text/plain" and document["contentEncoding"] == "utf-8", document


def test_inbox_json_carries_every_property_exactly(clean):
    sidecar = clean
    sidecar.send_c2d("h\u00e9llo\x00\n".encode(), headers=AWKWARD_SYSTEM_HEADERS)
    reply = sidecar.get("/inbox?timeout=10", headers={"Accept": "application/json"})
    assert reply.status == 200 and reply.header("Content-Type") == "application/json", reply
    document = reply.json()
    expect_every_property(document)
    assert document["body"] == "h\u00e9llo\x00\n" and document["bodyEncoding"] == "utf-8", document
    assert document["size"] == len("h\u00e9llo\x00\n".encode()) and document["deliveryCount"] == 1, document
    assert reply.header("ETag") == '"{}"'.format(document["lockToken"])
    assert "iothub-messageid" not in {name.lower() for name in reply.headers.keys()}
    # The header form (the default) carries what headers can, and counts what they cannot.
    assert sidecar.post("/inbox/{}/abandon".format(document["lockToken"])).status == 204
    reply = sidecar.get("/inbox?timeout=10", headers={"Accept": "*/*"})
    assert reply.status == 200 and reply.body == "h\u00e9llo\x00\n".encode()
    assert reply.header("iothub-messageid") == "awkward-1" and reply.header("iothub-userid") == "user-1"
    assert reply.header("iothub-expiry") == "2099-01-01T00:00:00.000Z" and reply.header("iothub-deliverycount") == "2"
    assert reply.headers["iothub-app-plain"].encode("latin-1").decode() == "caf\u00e9 ok"
    assert reply.header("iothub-inexact-properties") == "4", reply.headers
    assert reply.header("iothub-app-ctl") is None and reply.header("iothub-app-pad") is None
    assert sidecar.request("DELETE", "/inbox/" + reply.header("ETag").strip('"')).status == 204


def test_inbox_json_gives_a_body_that_is_not_utf8_in_base64(clean):
    sidecar = clean
    payload = bytes([0, 0xFF, 0xC3, 0x28, 0x80, 10])
    sidecar.send_c2d(payload, headers={"iothub-messageid": "binary-1"})
    reply = sidecar.get("/inbox?timeout=10", headers={"Accept": "text/plain;q=0.5, application/json"})
    document = reply.json()
    assert document["bodyEncoding"] == "base64" and base64.b64decode(document["body"]) == payload, document
    assert document["messageId"] == "binary-1" and document["size"] == len(payload) and "properties" not in document
    assert "userId" not in document and "ack" not in document
    assert sidecar.request("DELETE", "/inbox/" + document["lockToken"]).status == 204
    # application/json refused with q=0 keeps the header form.
    sidecar.send_c2d(b"again", headers={"iothub-messageid": "binary-2"})
    reply = sidecar.get("/inbox?timeout=10", headers={"Accept": "application/json;q=0"})
    assert reply.status == 200 and reply.body == b"again" and reply.header("iothub-messageid") == "binary-2"
    assert sidecar.request("DELETE", "/inbox/" + reply.header("ETag").strip('"')).status == 204


def test_localhub_refuses_properties_that_are_not_a_json_object_of_strings(sidecar):
    for value in ["not json", "[]", '{"n": 1}', '{"": "x"}']:
        reply = sidecar.hub("POST", "/local/devices/{}/messages".format(sidecar.device), body=b"x",
                            headers={"localhub-properties": value})
        assert reply.status == 400, (value, reply)
    reply = sidecar.hub("POST", "/local/devices/{}/messages".format(sidecar.device), body=b"x",
                        headers={"localhub-properties": '{"k": "a"}', "iothub-app-k": "b"})
    assert reply.status == 400, reply


def test_long_poll_waits_and_times_out(clean):
    sidecar = clean
    started = time.time()
    reply = sidecar.get("/inbox?timeout=1")
    assert reply.status == 204 and reply.body == b""
    assert time.time() - started >= 0.9
    threading.Timer(0.5, lambda: sidecar.send_c2d(b"late")).start()
    reply = sidecar.get("/inbox?timeout=20")
    assert reply.status == 200 and reply.body == b"late"
    sidecar.request("DELETE", "/inbox/" + reply.header("ETag").strip('"'))


@pytest.mark.parametrize("query", ["timeout=56", "timeout=-1", "timeout=abc", "timeout=1.5"])
def test_timeout_out_of_range(sidecar, query):
    for path in ("/inbox", "/methods", "/twin/desired"):
        document = problem(sidecar.get(path + "?" + query), 400, "ValueError")
        assert document["field"] == "timeout"


def test_a_poll_whose_caller_left_loses_nothing(clean):
    sidecar = clean
    # A raw client that asks and hangs up while the poll waits.
    raw = socket.create_connection(("127.0.0.1", sidecar.port))
    raw.sendall(b"GET /inbox?timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)
    raw.close()
    time.sleep(0.5)
    sidecar.send_c2d(b"kept")
    reply = sidecar.get("/inbox?timeout=10")
    assert reply.status == 200 and reply.body == b"kept"
    assert reply.header("iothub-deliverycount") == "1"
    sidecar.request("DELETE", "/inbox/" + reply.header("ETag").strip('"'))


def test_concurrent_pollers_each_get_one_message(clean):
    sidecar = clean
    results = []

    def poll():
        results.append(sidecar.get("/inbox?timeout=20"))

    pollers = [threading.Thread(target=poll) for _ in range(4)]
    for poller in pollers:
        poller.start()
    time.sleep(0.5)
    for index in range(4):
        sidecar.send_c2d("m{}".format(index).encode())
    for poller in pollers:
        poller.join(30)
    assert sorted(reply.body for reply in results) == [b"m0", b"m1", b"m2", b"m3"]
    for reply in results:
        sidecar.request("DELETE", "/inbox/" + reply.header("ETag").strip('"'))


# ---------------------------------------------------------------- methods

def test_method_round_trip(sidecar):
    call = sidecar.invoke_method("reboot", {"delay": 5})
    request = sidecar.get("/methods?timeout=20&name=reboot")
    assert request.status == 200, request
    body = request.json()
    assert body["methodName"] == "reboot" and body["payload"] == {"delay": 5}
    answer = sidecar.post("/methods/{}/response".format(quote(body["requestId"])), body={"status": 201, "payload": {"rebooting": True}})
    assert answer.status == 204, answer
    call.join(20)
    assert call.reply.status == 200 and call.reply.json() == {"status": 201, "payload": {"rebooting": True}}
    problem(sidecar.post("/methods/{}/response".format(quote(body["requestId"])), body={"status": 200}), 404, "NotFound")
    problem(sidecar.post("/methods/never-seen/response", body={"status": 200}), 404, "NotFound")


def test_method_name_filter_leaves_other_requests(sidecar):
    call = sidecar.invoke_method("other", None)
    assert sidecar.get("/methods?timeout=2&name=wanted").status == 204
    request = sidecar.get("/methods?timeout=10")
    assert request.status == 200 and request.json()["methodName"] == "other" and request.json()["payload"] is None
    sidecar.post("/methods/{}/response".format(quote(request.json()["requestId"])), body={"status": 200})
    call.join(20)
    assert call.reply.json()["status"] == 200


def test_concurrent_method_pollers_are_served_once_each(sidecar):
    received = []

    def poll():
        received.append(sidecar.get("/methods?timeout=20"))

    pollers = [threading.Thread(target=poll) for _ in range(3)]
    for poller in pollers:
        poller.start()
    time.sleep(0.5)
    calls = [sidecar.invoke_method("m{}".format(index)) for index in range(3)]
    for poller in pollers:
        poller.join(30)
    assert sorted(reply.json()["methodName"] for reply in received) == ["m0", "m1", "m2"]
    for reply in received:
        assert sidecar.post("/methods/{}/response".format(quote(reply.json()["requestId"])), body={"status": 200}).status == 204
    for call in calls:
        call.join(20)
        assert call.reply.status == 200


@pytest.mark.parametrize("body, headers, status", [
    (b"{", {"Content-Type": "application/json"}, 400),
    (b'{"payload":1}', {"Content-Type": "application/json"}, 400),
    (b'{"status":"ok"}', {"Content-Type": "application/json"}, 400),
    (b'{"status":200}', {"Content-Type": "text/plain"}, 415),
])
def test_method_response_validation(sidecar, body, headers, status):
    problem(sidecar.post("/methods/1/response", body=body, headers=headers), status, "ValueError")


# ---------------------------------------------------------------- twin

def test_twin_read_and_reported_patch(sidecar):
    twin = sidecar.get("/twin").json()
    before = twin["reported"]["$version"]
    reply = sidecar.request("PATCH", "/twin", body={"firmware": "1.2.0", "nested": {"a": 1}})
    assert reply.status == 200 and reply.json()["version"] > before
    reply = sidecar.request("PATCH", "/twin", body=b'{"nested":{"b":2},"firmware":null}', headers={"Content-Type": "application/merge-patch+json"})
    assert reply.status == 200
    reported = sidecar.get("/twin").json()["reported"]
    assert reported["nested"] == {"a": 1, "b": 2} and "firmware" not in reported
    service_view = sidecar.hub("GET", "/twins/sidecar-device?api-version=2021-04-12").json()
    assert service_view["properties"]["reported"]["nested"] == {"a": 1, "b": 2}


@pytest.mark.parametrize("body, headers, status", [
    (b"[1]", {"Content-Type": "application/json"}, 400),
    (b"{", {"Content-Type": "application/json"}, 400),
    (b"{}", {"Content-Type": "text/plain"}, 415),
])
def test_twin_patch_validation(sidecar, body, headers, status):
    problem(sidecar.request("PATCH", "/twin", body=body, headers=headers), status, "ValueError")


def test_desired_properties_cursor(sidecar):
    current = sidecar.get("/twin/desired?since=0&timeout=0").json()
    version = current["version"]
    assert current["desired"]["$version"] == version
    assert sidecar.get("/twin/desired?since={}&timeout=1".format(version)).status == 204
    threading.Timer(0.5, lambda: sidecar.set_desired({"interval": 10})).start()
    update = sidecar.get("/twin/desired?since={}&timeout=20".format(version))
    assert update.status == 200, update
    body = update.json()
    assert body["version"] == version + 1 and body["desired"]["interval"] == 10
    assert body["patches"] == [{"interval": 10, "$version": version + 1}]
    sidecar.set_desired({"interval": 20})
    sidecar.set_desired({"mode": "eco"})
    deadline = time.time() + 10
    while True:
        body = sidecar.get("/twin/desired?since={}&timeout=5".format(version + 1)).json()
        if body["version"] == version + 3 or time.time() > deadline:
            break
    assert body["version"] == version + 3
    assert body["desired"]["interval"] == 20 and body["desired"]["mode"] == "eco"
    assert [patch["$version"] for patch in body["patches"]] == [version + 2, version + 3]
    problem(sidecar.get("/twin/desired?since=-1"), 400, "ValueError")


# ---------------------------------------------------------------- file upload

def test_upload_blob_in_one_call(sidecar):
    content = os.urandom(3 * 1024 * 1024 + 17)
    reply = sidecar.request("PUT", "/blob/" + quote("logs/today.bin"), body=content, headers={"Content-Type": "application/x-test"})
    assert reply.status == 201, reply
    result = reply.json()
    assert result["blobName"] == "sidecar-device/logs/today.bin"
    assert result["blobUrl"].endswith("/sidecar-device/logs/today.bin") and "sig=" not in result["blobUrl"]
    uploads = sidecar.hub("GET", "/local/file-uploads")
    assert result["correlationId"].encode() in uploads.body, uploads
    blob = sidecar.hub("GET", "/local/blobs/fileuploads/" + quote("sidecar-device/logs/today.bin"))
    assert blob.status == 200 and blob.body == content


def test_an_upload_without_a_body_is_an_empty_file(sidecar):
    connection = sidecar.connection()
    connection.putrequest("PUT", "/blob/empty.txt")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 201, response.read()
    response.read()
    blob = sidecar.hub("GET", "/local/blobs/fileuploads/" + quote("sidecar-device/empty.txt"))
    assert blob.status == 200 and blob.body == b""


def test_upload_needs_a_length(sidecar):
    connection = sidecar.connection()
    connection.putrequest("PUT", "/blob/chunked.txt")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    connection.send(b"5\r\nhello\r\n0\r\n\r\n")
    response = connection.getresponse()
    assert response.status == 411 and json.loads(response.read())["code"] == "ValueError"


def test_storage_info_and_notification(sidecar):
    reply = sidecar.post("/blob/sas", body={"blobName": "manual.txt"})
    assert reply.status == 200, reply
    info = reply.json()
    assert info["blobName"] == "sidecar-device/manual.txt" and info["sasToken"].startswith("?")
    assert info["blobUrl"].startswith("https://" + info["hostName"] + "/" + info["containerName"] + "/sidecar-device/manual.txt?")
    notified = sidecar.post("/blob/notifications", body={"correlationId": info["correlationId"], "isSuccess": False, "statusCode": 500, "statusDescription": "gave up"})
    assert notified.status == 204, notified
    problem(sidecar.post("/blob/sas", body={"blobName": ""}), 400, "ValueError")
    problem(sidecar.post("/blob/sas", body={}), 400, "ValueError")
    problem(sidecar.post("/blob/notifications", body={"correlationId": "x"}), 400, "ValueError")
    problem(sidecar.post("/blob/sas", body=b"{}", headers={"Content-Type": "text/plain"}), 415, "ValueError")


# ---------------------------------------------------------------- connection

def test_sastoken_needs_a_sas_identity(sidecar):
    problem(sidecar.request("PUT", "/sastoken", body=b"SharedAccessSignature sr=x&sig=y&se=1", headers={"Content-Type": "text/plain"}), 409, "ClientError")
    problem(sidecar.request("PUT", "/sastoken", body=b"{}", headers={"Content-Type": "application/json"}), 415, "ValueError")


def test_events_stream(sidecar):
    connection = sidecar.connection(timeout=20)
    connection.request("GET", "/events")
    stream = connection.getresponse()
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream" and stream.headers["Cache-Control"] == "no-cache"

    def next_event():
        name, data = None, None
        while True:
            line = stream.readline()
            if not line:
                raise AssertionError("the stream ended")
            line = line.rstrip(b"\n")
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data = json.loads(line[6:])
            elif line == b"" and name:
                return name, data

    name, data = next_event()
    assert name == "connection" and data["state"] == "connected"
    drain(sidecar)
    sidecar.send_c2d(b"evt", headers={"iothub-messageid": "e1", "iothub-app-k": "v"})
    name, data = next_event()
    assert name == "message" and data["messageId"] == "e1" and data["size"] == 3 and data["properties"] == {"k": "v"} and data["queued"] >= 1
    # Every property, exactly, as in the JSON of GET /inbox.
    sidecar.send_c2d(b"awkward", headers=AWKWARD_SYSTEM_HEADERS)
    name, data = next_event()
    assert name == "message" and data["size"] == 7, (name, data)
    expect_every_property(data)
    call = sidecar.invoke_method("evented", {"x": 1})
    name, data = next_event()
    assert name == "method" and data["methodName"] == "evented" and data["payload"] == {"x": 1}
    sidecar.post("/methods/{}/response".format(quote(data["requestId"])), body={"status": 200})
    call.join(20)
    sidecar.set_desired({"evented": True})
    name, data = next_event()
    assert name == "desired" and data["patch"]["evented"] is True and data["version"] == data["patch"]["$version"]
    connection.close()
    drain(sidecar)


def test_disconnect_and_connect(sidecar):
    assert sidecar.post("/disconnect").status == 204
    assert sidecar.post("/disconnect").status == 204
    document = problem(sidecar.get("/readyz"), 503, "NoConnectionError")
    assert "disconnected" in document["detail"]
    assert sidecar.get("/status").json()["state"] == "disconnected"
    assert sidecar.post("/connect").status == 204
    assert sidecar.get("/readyz").status == 200
    # With auto-connect (the default) an operation reconnects by itself.
    assert sidecar.post("/disconnect").status == 204
    assert sidecar.post("/messages", body=b"after disconnect").status == 200
    assert sidecar.get("/status").json()["state"] == "connected"


def test_the_contract_is_valid_openapi():
    from openapi_spec_validator import validate
    with open(SPEC_PATH) as spec:
        validate(yaml.safe_load(spec))


def test_a_method_request_whose_poller_left_goes_back(sidecar):
    raw = socket.create_connection(("127.0.0.1", sidecar.port))
    raw.sendall(b"GET /methods?timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)
    raw.close()
    time.sleep(0.5)
    call = sidecar.invoke_method("kept")
    request = sidecar.get("/methods?timeout=10")
    assert request.status == 200 and request.json()["methodName"] == "kept"
    assert sidecar.post("/methods/{}/response".format(quote(request.json()["requestId"])), body={"status": 200}).status == 204
    call.join(20)
    assert call.reply.status == 200


def test_the_hub_throttling_is_passed_on(sidecar):
    assert sidecar.hub("PUT", "/local/faults", body={"throttleNextOperations": 1}).status == 200
    try:
        problem(sidecar.get("/twin"), 429, "ServiceError")
        assert sidecar.get("/twin").status == 200
        # Over HTTPS the hub says when to come back; the sidecar passes that on.
        assert sidecar.hub("PUT", "/local/faults", body={"throttleNextOperations": 1}).status == 200
        throttled = sidecar.post("/blob/sas", body={"blobName": "later.txt"})
        problem(throttled, 429, "ServiceError")
        assert throttled.header("Retry-After") == "1"
    finally:
        sidecar.hub("DELETE", "/local/faults")


def test_a_dropped_connection_is_restored_and_loses_no_message(sidecar):
    connection = sidecar.connection(timeout=30)
    connection.request("GET", "/events")
    stream = connection.getresponse()
    states = []
    cursor = sidecar.telemetry_cursor()
    assert sidecar.hub("POST", "/local/devices/sidecar-device/disconnect").status in (200, 202, 204)
    results = [sidecar.post("/messages", body="after drop {}".format(index).encode()) for index in range(5)]
    assert [reply.status for reply in results] == [200] * 5
    deadline = time.time() + 20
    while "connected" not in states[1:] and time.time() < deadline:
        line = stream.readline().strip()
        if line.startswith(b"data: ") and b'"state"' in line:
            states.append(json.loads(line[6:])["state"])
    connection.close()
    assert states[0] == "connected" and "reconnecting" in states and states[-1] == "connected", states
    messages = sidecar.telemetry(after=cursor, timeout=5)["messages"]
    bodies = [message["bodyText"] for message in messages]
    assert all("after drop {}".format(index) in bodies for index in range(5)), bodies
    # At least once, never sent twice by the sidecar: a copy after the first is a redelivery (DUP).
    for index, message in enumerate(messages):
        assert message["redelivered"] or message["bodyText"] not in bodies[:index], messages
    reconnects = re.search(r"^iothub_sidecar_reconnects_total (\d+)$", sidecar.get("/metrics").body.decode(), re.M)
    assert reconnects and int(reconnects.group(1)) >= 1


def test_a_large_batch_arrives_complete_and_in_order(sidecar):
    cursor = sidecar.telemetry_cursor()
    batch = [{"body": "n{}".format(index), "properties": {"iothub-messageid": "order-{}".format(index)}} for index in range(500)]
    reply = sidecar.post("/messages", body=json.dumps(batch).encode(), headers={"Content-Type": "application/vnd.microsoft.iothub.json"})
    assert reply.status == 200
    assert [result["messageId"] for result in reply.json()["results"]] == ["order-{}".format(index) for index in range(500)]
    received = []
    while len(received) < 500:
        page = sidecar.telemetry(after=cursor, timeout=5)
        assert page["messages"], "the hub received only {} messages".format(len(received))
        received += [message["bodyText"] for message in page["messages"]]
        cursor = page["next"]
    assert received == ["n{}".format(index) for index in range(500)]


# ---------------------------------------------------------------- input checks

def blob_names_refused():
    """Blob names Azure storage would misread (dot segments, empty segments, a backslash, a
    trailing dot, control characters), as sent and percent-encoded."""
    return ["../../x", "a/../b", "..", "./x", "a/./b", ".", "a//b", "x/", "a\\b", "x.", "a\x01b", "a\x7fb",
            "%2e%2e/x", "a/%2E%2e/b", "%2E/x", "/x", "x" * 1025]


@pytest.mark.parametrize("name", blob_names_refused())
def test_storage_info_refuses_a_blob_name_storage_would_misread(sidecar, name):
    document = problem(sidecar.post("/blob/sas", body={"blobName": name}), 400, "ValueError")
    assert document["field"] == "blobName", document


@pytest.mark.parametrize("path", [
    "..%2F..%2Fx", "a%2F..%2Fb", "%2e%2e%2Fx", "a/%2e%2e/b", "%2E/x", "a%2F%2Fb", "x%2F", "a%5Cb", "x.", "a%01b",
    "a%2F%252e%252e%2Fb",
])
def test_upload_refuses_a_blob_name_storage_would_misread(sidecar, path):
    before = sidecar.hub("GET", "/local/file-uploads").body
    document = problem(sidecar.request("PUT", "/blob/" + path, body=b"x", headers={"Content-Type": "application/octet-stream"}), 400, "ValueError")
    assert document["field"] == "blobName", document
    assert sidecar.hub("GET", "/local/file-uploads").body == before  # the hub was not asked


def test_blob_names_with_dots_inside_segments_are_fine(sidecar):
    for name in ["a..b/c.txt", ".hidden/x", "v1.2/..data", "x/y..z"]:
        reply = sidecar.post("/blob/sas", body={"blobName": name})
        assert reply.status == 200, (name, reply)
        assert reply.json()["blobName"] == "sidecar-device/" + name


def test_a_property_too_long_for_an_mqtt_topic_is_refused(sidecar):
    cursor = sidecar.telemetry_cursor()
    document = problem(sidecar.post("/messages", body=b"x", headers={"iothub-app-big": "v" * 65_500}), 413, "ValueError")
    assert re.search(r"the message's properties make an MQTT topic of \d+ bytes; at most 65535 fit", document["detail"]), document
    batch = [{"body": "before"}, {"body": "x", "properties": {"iothub-app-big": "v" * 65_500}}, {"body": "after"}]
    reply = sidecar.post("/messages", body=json.dumps(batch).encode(), headers={"Content-Type": "application/vnd.microsoft.iothub.json"})
    assert reply.status == 200, reply
    results = reply.json()["results"]
    assert [result["status"] for result in results] == [200, 413, 200], results
    assert results[1]["error"]["code"] == "ValueError" and "at most 65535 fit" in results[1]["error"]["detail"]
    assert [message["bodyText"] for message in sidecar.telemetry(after=cursor)["messages"]] == ["before", "after"]
    # Just below the limit still goes.
    assert sidecar.post("/messages", body=b"x", headers={"iothub-app-big": "v" * 65_300}).status == 200


def raw_request(sidecar, head, body=b""):
    """Sends `head` (request line and headers, bytes as they are) and `body`; returns the status and JSON body."""
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=30) as raw:
        raw.sendall(head + b"Host: x\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        answer = b""
        while True:
            chunk = raw.recv(65536)
            if not chunk:
                break
            answer += chunk
    head_text, _, payload = answer.partition(b"\r\n\r\n")
    return int(head_text.split(b" ")[1]), (json.loads(payload) if payload else None)


@pytest.mark.parametrize("name", [b"iothub-messageid", b"iothub-correlationid", b"iothub-userid", b"iothub-contenttype",
                                  b"iothub-contentencoding", b"iothub-expiry", b"iothub-app-colour", b"Content-Type"])
@pytest.mark.parametrize("value", [b"id-\xff", b"\xc3\x28", b"ok\xed\xa0\x80"])
def test_header_values_that_are_not_utf8_are_refused(sidecar, name, value):
    cursor = sidecar.telemetry_cursor()
    status, document = raw_request(sidecar, b"POST /messages HTTP/1.1\r\n" + name + b": " + value + b"\r\n", b"x")
    assert status == 400 and document["code"] == "ValueError", document
    assert document["field"].lower() == name.decode().lower(), document
    assert "UTF-8" in document["detail"], document
    assert sidecar.telemetry(after=cursor, timeout=0)["messages"] == []


def test_header_values_in_utf8_arrive_unchanged(sidecar):
    cursor = sidecar.telemetry_cursor()
    status, document = raw_request(sidecar, "POST /messages HTTP/1.1\r\niothub-app-city: Zürich\r\niothub-messageid: grüße\r\n".encode(), b"x")
    assert status == 200, document
    message = sidecar.telemetry(after=cursor)["messages"][0]
    assert message["properties"] == {"city": "Zürich"} and message["messageId"] == "grüße"


@pytest.mark.parametrize("entry", [
    b'{"body":"x","properties":{"iothub-app-c":"\xff"}}',
    b'{"body":"x","properties":{"iothub-messageid":"id-\xc3\x28"}}',
    b'{"body":"x","properties":{"iothub-app-\xff":"v"}}',
    b'{"body":"\xed\xa0\x80"}',
])
def test_batch_strings_that_are_not_utf8_are_refused(sidecar, entry):
    cursor = sidecar.telemetry_cursor()
    status, document = raw_request(
        sidecar, b"POST /messages HTTP/1.1\r\nContent-Type: application/vnd.microsoft.iothub.json\r\n", b'[{"body":"fine"},' + entry + b"]")
    assert status == 400 and document["code"] == "ValueError", document
    assert "UTF-8" in document["detail"], document
    assert sidecar.telemetry(after=cursor, timeout=0)["messages"] == []


def integer_bounds(document):
    """(name, minimum, maximum, how to send a value) of every integer the server checks."""
    parameters = document["components"]["parameters"]
    since = next(parameter for parameter in document["paths"]["/twin/desired"]["get"]["parameters"] if parameter.get("name") == "since")
    schemas = document["components"]["schemas"]
    return [
        # since=0 answers at once, whatever the timeout.
        ("timeout", parameters["Timeout"]["schema"], lambda sidecar, value: sidecar.get("/twin/desired?since=0&timeout={}".format(value))),
        ("since", since["schema"], lambda sidecar, value: sidecar.get("/twin/desired?timeout=0&since={}".format(value))),
        ("status", schemas["MethodResponse"]["properties"]["status"],
         lambda sidecar, value: sidecar.post("/methods/no-such-request/response", body={"status": value})),
        ("statusCode", schemas["BlobUploadNotification"]["properties"]["statusCode"],
         lambda sidecar, value: sidecar.post("/blob/notifications", body={"correlationId": "no-such-upload", "isSuccess": True, "statusCode": value, "statusDescription": ""})),
    ]


def test_integer_bounds_are_in_the_contract_and_in_the_errors(sidecar):
    with open(SPEC_PATH) as spec:
        document = yaml.safe_load(spec)
    expected = {"timeout": (0, 55), "since": (0, 2**31 - 1), "status": (-2**31, 2**31 - 1), "statusCode": (-2**31, 2**31 - 1)}
    for name, schema, send in integer_bounds(document):
        assert schema["type"] == "integer"
        assert (schema.get("minimum"), schema.get("maximum")) == expected[name], (name, schema)
        low, high = expected[name]
        for value in (low - 1, high + 1, 2**60, -2**60):
            refused = problem(send(sidecar, value), 400, "ValueError")
            assert refused["field"] == name, refused
            assert refused["detail"] == "{} must be an integer from {} to {}".format(name, low, high), refused
        for value in (low, high):
            reply = send(sidecar, value)
            assert not (reply.status == 400 and reply.json().get("field") == name), (name, value, reply)


def test_the_served_contract_and_its_copy_are_identical():
    with open(SPEC_PATH, "rb") as spec, open(os.path.join(os.path.dirname(SPEC_PATH), "..", "Sources", "Sidecar", "Resources", "sidecar.yaml"), "rb") as copy:
        assert spec.read() == copy.read()
