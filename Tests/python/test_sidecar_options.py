"""The identity and connection options of `serve`, each end to end: the real sidecar against a
real LocalHub (`iothub-sidecar hub` in its own process, or the embedded one), with what the hub
saw checked on the hub's side. (--cipher, --websockets, --proxy and the trust options have
files of their own: test_sidecar_transports.py, test_sidecar_trust.py.)"""
import hashlib
import json
import os
import ssl
import subprocess
import time

import pytest

from sidecar_support import API_VERSION, BINARY, Sidecar, StandaloneHub


class HubClient:
    """The service and /local APIs of a StandaloneHub, without a sidecar (Sidecar's helpers)."""

    def __init__(self, hub, device):
        self.hub_data_dir = hub.data_dir
        self.hub_https_port = hub.https_port
        self.device = device
        self._service_token = None

    ca_path = Sidecar.ca_path
    service_token = Sidecar.service_token
    hub = Sidecar.hub
    telemetry = Sidecar.telemetry
    telemetry_cursor = Sidecar.telemetry_cursor


@pytest.fixture(scope="module")
def hub():
    instance = StandaloneHub("options-device")
    yield instance
    instance.stop()


def secret_file(directory, name, text):
    path = os.path.join(str(directory), name)
    with open(path, "w") as file:
        file.write(text)
    os.chmod(path, 0o600)
    return path


def shared_access_key(connection_string):
    return dict(part.split("=", 1) for part in connection_string.split(";"))["SharedAccessKey"]


def sent_and_seen(sidecar, service, body, headers=None, device=None):
    """Sends `body` through the sidecar; returns the hub's record of it."""
    cursor = service.telemetry_cursor()
    reply = sidecar.post("/messages", body=body, headers=headers or {})
    assert reply.status == 200, reply
    deadline = time.time() + 20
    while time.time() < deadline:
        page = service.hub("GET", "/local/telemetry?after={}&timeout=5&deviceId={}".format(cursor, device or service.device)).json()
        for message in page["messages"]:
            if message.get("bodyText") == body.decode():
                return message
        cursor = page["next"]
    raise AssertionError("the hub never received {!r}".format(body))


def test_key_file_with_hostname_and_device_id(hub, tmp_path):
    key_file = secret_file(tmp_path, "key", shared_access_key(hub.connection_string) + "\n")
    sidecar = Sidecar(hub=hub, device=hub.device, identity_args=["--key-file", key_file, "--hostname", "localhost", "--device-id", hub.device])
    try:
        sidecar.wait_ready()
        assert sidecar.get("/status").json()["identity"] == {"hostName": "localhost", "deviceId": hub.device, "authentication": "symmetricKey"}
        seen = sent_and_seen(sidecar, HubClient(hub, hub.device), b"signed with a key file")
        assert seen["deviceId"] == hub.device and "moduleId" not in seen
    finally:
        assert sidecar.stop() == 0, sidecar.output()


def test_module_id_with_a_key_sends_to_an_output_and_receives_inputs(hub, tmp_path):
    """A module identity (--module-id): `IoTHubModuleClient.send_message_to_output` is
    `POST /messages` with `iothub-outputname`; its inputs arrive in the inbox."""
    service = HubClient(hub, hub.device)
    created = service.hub("PUT", "/devices/{}/modules/filter?api-version={}".format(hub.device, API_VERSION),
                          body={"deviceId": hub.device, "moduleId": "filter"})
    assert created.status == 200, created
    key_file = secret_file(tmp_path, "module-key", created.json()["authentication"]["symmetricKey"]["primaryKey"])
    sidecar = Sidecar(hub=hub, device=hub.device, identity_args=[
        "--key-file", key_file, "--hostname", "localhost", "--device-id", hub.device, "--module-id", "filter"])
    try:
        sidecar.wait_ready()
        assert sidecar.get("/status").json()["identity"]["moduleId"] == "filter"
        seen = sent_and_seen(sidecar, service, b"to an output", headers={"iothub-outputname": "alerts"})
        assert seen["moduleId"] == "filter" and seen["outputName"] == "alerts"
        sent = service.hub("POST", "/local/devices/{}/modules/filter/inputs/commands/messages".format(hub.device), body=b"an input")
        assert sent.status == 202, sent
        received = sidecar.get("/inbox?timeout=20")
        assert received.status == 200 and received.body == b"an input"
        assert received.header("iothub-inputname") == "commands"
    finally:
        assert sidecar.stop() == 0, sidecar.output()


def test_sas_token_file(hub, tmp_path):
    connection_string_file = secret_file(tmp_path, "connection-string", hub.connection_string)
    token = subprocess.run([BINARY, "sas-token", "--connection-string-file", connection_string_file, "--ttl", "3600"],
                           check=True, capture_output=True, text=True).stdout.strip()
    token_file = secret_file(tmp_path, "token", token + "\n")
    sidecar = Sidecar(hub=hub, device=hub.device, identity_args=["--sas-token-file", token_file])
    try:
        sidecar.wait_ready()
        status = sidecar.get("/status").json()
        assert status["identity"]["authentication"] == "sasToken" and status["newSasTokenRequired"] is False
        sent_and_seen(sidecar, HubClient(hub, hub.device), b"with a SAS token file")
    finally:
        assert sidecar.stop() == 0, sidecar.output()


@pytest.fixture
def x509_device(hub, tmp_path):
    """A self-signed device registered by thumbprint, its key encrypted with a pass phrase."""
    device_id = "options-x509-device"
    certificate, key = str(tmp_path / "device.pem"), str(tmp_path / "device.key")
    pass_phrase = "correct horse: battery staple"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", key, "-out", certificate, "-days", "2",
         "-subj", "/CN=" + device_id, "-passout", "pass:" + pass_phrase],
        check=True, capture_output=True, timeout=60)
    with open(key) as file:
        assert "ENCRYPTED" in file.read()
    with open(certificate) as file:
        thumbprint = hashlib.sha1(ssl.PEM_cert_to_DER_cert(file.read())).hexdigest().upper()
    reply = HubClient(hub, device_id).hub("PUT", "/devices/{}?api-version={}".format(device_id, API_VERSION), body={
        "deviceId": device_id,
        "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": thumbprint, "secondaryThumbprint": thumbprint}}})
    assert reply.status == 200, reply
    return device_id, certificate, key, secret_file(tmp_path, "pass-phrase", pass_phrase + "\n")


def test_x509_certificate_with_an_encrypted_key_and_its_pass_phrase_file(hub, x509_device):
    device_id, certificate, key, pass_phrase_file = x509_device
    identity = ["--x509-cert-file", certificate, "--x509-key-file", key, "--hostname", "localhost", "--device-id", device_id]
    sidecar = Sidecar(hub=hub, device=device_id, identity_args=identity + ["--x509-pass-phrase-file", pass_phrase_file])
    try:
        sidecar.wait_ready()
        assert sidecar.get("/status").json()["identity"]["authentication"] == "x509"
        seen = sent_and_seen(sidecar, HubClient(hub, device_id), b"with an X.509 certificate", device=device_id)
        assert seen["deviceId"] == device_id
    finally:
        assert sidecar.stop() == 0, sidecar.output()
    # Without the pass phrase the key cannot be read: the sidecar says so and does not start.
    refused = Sidecar(hub=hub, device=device_id, identity_args=identity)
    assert refused.process.wait(60) != 0
    assert "pass phrase" in refused.output(), refused.output()
    refused.stop()


def test_gateway_hostname(tmp_path):
    """The hub's name does not resolve: only --gateway-hostname (the hub's address, which its
    certificate names) reaches it; tokens and the MQTT user name keep the hub's name."""
    gateway_hub = StandaloneHub("gateway-device", hostname="myhub.azure-devices.invalid")
    sidecar = Sidecar(["--gateway-hostname", "127.0.0.1"], hub=gateway_hub, device=gateway_hub.device)
    try:
        sidecar.wait_ready()
        assert sidecar.get("/status").json()["identity"]["hostName"] == "myhub.azure-devices.invalid"
        seen = sent_and_seen(sidecar, HubClient(gateway_hub, gateway_hub.device), b"through the gateway")
        assert seen["deviceId"] == gateway_hub.device
    finally:
        assert sidecar.stop() == 0, sidecar.output()
        gateway_hub.stop()


def route_connection_events(sidecar):
    reply = sidecar.hub("PUT", "/local/routes", body={"messageSources": ["deviceConnectionStateEvents"]})
    assert reply.status == 200, reply


def connection_events(sidecar):
    """The hub's deviceConnected / deviceDisconnected events for the sidecar's device, in order."""
    reply = sidecar.hub("GET", "/local/telemetry?after=0&limit=1000&deviceId={}&messageSource=deviceConnectionStateEvents".format(sidecar.device))
    assert reply.status == 200, reply
    return [message["properties"]["opType"] for message in reply.json()["messages"]]


def test_sastoken_ttl_renews_the_token_before_it_expires():
    """Tokens signed for 4 s are renewed 2 s into each connection: a new connection with a new
    token each time, and telemetry goes on."""
    sidecar = Sidecar(["--sastoken-ttl", "4"])
    try:
        sidecar.wait_ready()
        route_connection_events(sidecar)
        first_expiry = sidecar.get("/status").json()["tokenExpiry"]
        expiries = {first_expiry}
        deadline = time.time() + 30
        while len(expiries) < 4 and time.time() < deadline:
            expiries.add(sidecar.get("/status").json()["tokenExpiry"])
            time.sleep(0.2)
        assert len(expiries) >= 4, expiries
        assert connection_events(sidecar).count("deviceConnected") >= 2
        assert sidecar.post("/messages", body=b"after renewals").status == 200
    finally:
        assert sidecar.stop() == 0, sidecar.output()


def test_connection_retry_false_stays_disconnected_after_a_drop():
    sidecar = Sidecar(["--connection-retry", "false"])
    try:
        sidecar.wait_ready()
        route_connection_events(sidecar)
        assert sidecar.hub("POST", "/local/devices/{}/disconnect".format(sidecar.device)).status in (200, 204)
        deadline = time.time() + 20
        while sidecar.get("/status").json()["state"] == "connected" and time.time() < deadline:
            time.sleep(0.1)
        # Several retry intervals (--connection-retry-interval 1) go by without an attempt.
        time.sleep(4)
        status = sidecar.get("/status").json()
        assert status["state"] == "disconnected", status
        assert sidecar.get("/readyz").status == 503
        hub_status = sidecar.hub("GET", "/local/status").json()
        assert sidecar.device not in hub_status["connected"]
        assert connection_events(sidecar).count("deviceConnected") == 0, "the sidecar connected again"
    finally:
        assert sidecar.stop() == 0, sidecar.output()


@pytest.mark.parametrize("how", ["default", "flag", "environment"])
def test_ensure_desired_properties(how):
    """With it (the default), desired properties changed while disconnected reach
    GET /twin/desired after the reconnect; without it, they do not."""
    args = ["--ensure-desired-properties", "false"] if how == "flag" else []
    env = {"IOTHUB_ENSURE_DESIRED_PROPERTIES": "false"} if how == "environment" else {}
    sidecar = Sidecar(args, env=env)
    try:
        sidecar.wait_ready()
        version = sidecar.get("/twin/desired?since=0&timeout=5").json()["version"]
        assert sidecar.post("/disconnect").status == 204
        sidecar.set_desired({"changedWhileAway": 1})
        assert sidecar.post("/connect").status == 204
        reply = sidecar.get("/twin/desired?since={}&timeout=5".format(version))
        if how == "default":
            assert reply.status == 200, reply
            assert reply.json()["version"] == version + 1 and reply.json()["desired"]["changedWhileAway"] == 1
        else:
            assert reply.status == 204, reply
            # A patch sent while connected still arrives (once the reconnected client has
            # subscribed again, which happens in the background: hence the retries).
            for attempt in range(5):
                sidecar.set_desired({"changedWhileConnected": attempt})
                reply = sidecar.get("/twin/desired?since={}&timeout=5".format(version))
                if reply.status == 200:
                    break
            assert reply.status == 200 and "changedWhileConnected" in reply.json()["desired"], reply
    finally:
        assert sidecar.stop() == 0, sidecar.output()


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_product_info_is_in_the_user_agent_the_hub_records(how):
    info = " my-app/1.2 (plant 7)"
    sidecar = Sidecar(["--product-info", info] if how == "flag" else [], env={"IOTHUB_PRODUCT_INFO": info} if how == "environment" else {})
    try:
        sidecar.wait_ready()
        connections = sidecar.hub("GET", "/local/status").json()["connections"]
        user_agent = next(connection for connection in connections if connection["clientId"] == sidecar.device)["userAgent"]
        assert user_agent.startswith("iothub-sidecar/") and user_agent.endswith(info), user_agent
    finally:
        assert sidecar.stop() == 0, sidecar.output()


def test_a_disconnect_stays_until_something_needs_the_connection():
    """POST /disconnect is not undone by the sidecar itself (its empty outbox needs no
    connection); auto-connect connects again for an operation that needs the hub."""
    sidecar = Sidecar()
    try:
        sidecar.wait_ready()
        assert sidecar.post("/disconnect").status == 204
        time.sleep(3)
        assert sidecar.get("/status").json()["state"] == "disconnected"
        assert sidecar.device not in sidecar.hub("GET", "/local/status").json()["connected"]
        assert sidecar.post("/messages", body=b"reconnects").status == 200
        assert sidecar.get("/status").json()["state"] == "connected"
    finally:
        assert sidecar.stop() == 0, sidecar.output()


def next_event_named(sidecar, wanted, timeout=30):
    """Follows GET /events until an event named `wanted` comes; returns its data."""
    connection = sidecar.connection(timeout=timeout)
    try:
        connection.request("GET", "/events")
        stream = connection.getresponse()
        assert stream.status == 200
        deadline = time.time() + timeout
        name = None
        while time.time() < deadline:
            line = stream.readline()
            if not line:
                break
            line = line.rstrip(b"\n")
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: ") and name == wanted:
                return json.loads(line[6:])
    finally:
        connection.close()
    raise AssertionError("no {} event within {} s".format(wanted, timeout))


def test_the_sastoken_event_asks_for_a_new_token(hub, tmp_path):
    """`on_new_sastoken_required` over REST: a supplied token that expires within 120 s gives a
    `sastoken` event (and `newSasTokenRequired` in /status)."""
    connection_string_file = secret_file(tmp_path, "connection-string", hub.connection_string)
    token = subprocess.run([BINARY, "sas-token", "--connection-string-file", connection_string_file, "--ttl", "130"],
                           check=True, capture_output=True, text=True).stdout.strip()
    sidecar = Sidecar(hub=hub, device=hub.device, identity_args=["--sas-token-file", secret_file(tmp_path, "token", token)])
    try:
        sidecar.wait_ready()
        event = next_event_named(sidecar, "sastoken")
        assert event["tokenExpiry"] == sidecar.get("/status").json()["tokenExpiry"]
        assert sidecar.get("/status").json()["newSasTokenRequired"] is True
    finally:
        assert sidecar.stop() == 0, sidecar.output()


def test_the_error_event_reports_each_failed_attempt(hub, tmp_path):
    """`on_background_exception` over REST: a hub whose certificate is not trusted gives an
    `error` event with ConnectionFailedError for the attempts the sidecar makes."""
    other_ca = str(tmp_path / "other-ca.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(tmp_path / "other-ca.key"), "-out", other_ca, "-days", "2", "-subj", "/CN=another CA"],
        check=True, capture_output=True, timeout=30)
    sidecar = Sidecar(hub=hub, device=hub.device, ca_file=other_ca)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                sidecar.get("/healthz", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        event = next_event_named(sidecar, "error")
        assert event["code"] == "ConnectionFailedError" and "certificate" in event["message"], event
    finally:
        assert sidecar.stop() == 0, sidecar.output()
