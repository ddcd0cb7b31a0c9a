"""LocalHub's Device Provisioning Service with Microsoft's unmodified SDKs: devices register with
azure-iot-device's ProvisioningDeviceClient (MQTT and MQTT over WebSockets, symmetric keys and
X.509), enrollments are made and registration states read with azure-iot-deviceprovisioning's
DeviceProvisioningClient, and the assigned device then talks to the hub with IoTHubDeviceClient.
Hostile input goes through paho-mqtt (the MQTT client the device SDK itself uses) directly."""
import base64
import hashlib
import hmac
import json
import queue
import ssl
import subprocess
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.iot.device import IoTHubDeviceClient, Message, ProvisioningDeviceClient, X509
from azure.iot.device.exceptions import ClientError, CredentialError, ServiceError

from conftest import HOST, MQTT_PORT, bounded, json_body, new_key, parse_connection_string, sas_token

REGISTER_TIMEOUT = 60


def registration_id(prefix):
    """A fresh registration id in DPS's alphabet (lower-case letters, digits, -._:)."""
    return "{}-{}".format(prefix, uuid.uuid4().hex[:10])


def derived_key(group_key, registration_id):
    """The device key of an enrollment group, computed here independently of the hub."""
    mac = hmac.new(base64.b64decode(group_key), registration_id.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


class Provisioning:
    """The hub's provisioning service: its ID scope, the service SDK's client, cleanup."""

    def __init__(self, hub):
        from azure.iot.deviceprovisioning import DeviceProvisioningClient
        self.hub = hub
        self.id_scope = (hub.data_dir / "dps-id-scope").read_text().strip()
        self.connection_string = (hub.data_dir / "provisioning-service-connection-string").read_text().strip()
        self.client = DeviceProvisioningClient.from_connection_string(
            self.connection_string, connection_verify=hub.ca_path, connection_timeout=20, read_timeout=30)
        self.enrollments, self.groups, self.devices = [], [], []

    def individual(self, registration_id, **fields):
        body = {"registrationId": registration_id, "attestation": {"type": "symmetricKey"}}
        body.update(fields)
        created = bounded(self.client.enrollment.create_or_update, registration_id, body, what="enrollment.create_or_update")
        self.enrollments.append(registration_id)
        self.devices.append(fields.get("deviceId", registration_id))
        return created

    def group(self, group_id, **fields):
        body = {"enrollmentGroupId": group_id, "attestation": {"type": "symmetricKey"}}
        body.update(fields)
        created = bounded(self.client.enrollment_group.create_or_update, group_id, body, what="enrollment_group.create_or_update")
        self.groups.append(group_id)
        return created

    def device_client(self, registration_id, key, **kwargs):
        return ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host=HOST, registration_id=registration_id, id_scope=self.id_scope, symmetric_key=key,
            server_verification_cert=self.hub.ca_pem, **kwargs)

    def local_status(self):
        response = self.hub.request("GET", "local/provisioning")
        assert response.status_code == 200, response.text
        return response.json()

    def count(self, registration_id):
        return next((r["count"] for r in self.local_status()["registrations"] if r["registrationId"] == registration_id), 0)

    def cleanup(self, registry_manager):
        for registration_id in self.enrollments:
            for remove in (self.client.enrollment.delete, self.client.device_registration_state.delete):
                try:
                    remove(registration_id)
                except (ResourceNotFoundError, HttpResponseError):
                    pass
        for group_id in self.groups:
            try:
                self.client.enrollment_group.delete(group_id)
            except (ResourceNotFoundError, HttpResponseError):
                pass
        for device_id in self.devices:
            try:
                registry_manager.delete_device(device_id)
            except Exception:  # noqa: BLE001 - never created, or deleted by the test
                pass


@pytest.fixture
def dps(hub, registry_manager):
    provisioning = Provisioning(hub)
    yield provisioning
    provisioning.cleanup(registry_manager)


def register(client):
    """register(), bounded. A client whose registration failed stays connected (the SDK shuts
    its pipeline down only after a success and has no public shutdown), and would reconnect
    when the hub stops; its pipeline is shut down here."""
    try:
        return bounded(client.register, timeout=REGISTER_TIMEOUT, what="register")
    except BaseException:
        from azure.iot.device.common.evented_callback import EventedCallback
        done = EventedCallback()
        client._pipeline.shutdown(callback=done)
        bounded(done.wait_for_completion, timeout=20, what="shutting down a failed ProvisioningDeviceClient")
        raise


def send_one_message(hub, device_clients, client, device_id, text):
    device_clients(client)
    bounded(client.connect, timeout=30, what="connect to the assigned hub")
    bounded(client.send_message, Message(text, message_id=text), timeout=20, what="send_message")
    [received] = hub.telemetry(device_id, 1)
    assert received["messageId"] == text
    assert json_body(received) == text.encode()


def test_individual_symmetric_key_enrollment_assigns_the_device_with_its_initial_twin(hub, dps, registry_manager, device_clients):
    registration = registration_id("dps-ind")
    enrollment = dps.individual(
        registration, initialTwin={"tags": {"site": "lab"}, "properties": {"desired": {"interval": 30}}},
        reprovisionPolicy={"updateHubAssignment": True, "migrateDeviceData": True})
    key = enrollment["attestation"]["symmetricKey"]["primaryKey"]
    assert base64.b64decode(key, validate=True)
    assert enrollment["provisioningStatus"] == "enabled"
    # The hub printed its ID scope at start, the one in its data directory.
    assert any(dps.id_scope in line for line in hub.stdout_lines if "DPS ID scope" in line), hub.stdout_lines
    assert enrollment["etag"]

    result = register(dps.device_client(registration, key))
    assert result.status == "assigned"
    assert result.operation_id
    state = result.registration_state
    assert state.assigned_hub == HOST
    assert state.device_id == registration
    assert state.sub_status == "initialAssignment"

    # The device exists in the hub's registry with the enrollment's key and initial twin.
    device = registry_manager.get_device(registration)
    assert device.authentication.type == "sas"
    assert device.authentication.symmetric_key.primary_key == key
    twin = registry_manager.get_twin(registration)
    assert twin.tags == {"site": "lab"}
    assert twin.properties.desired["interval"] == 30

    # The service SDK reads the registration state back.
    read = bounded(dps.client.device_registration_state.get, registration, what="device_registration_state.get")
    assert read["status"] == "assigned"
    assert read["deviceId"] == registration
    assert read["assignedHub"] == HOST
    assert read["substatus"] == "initialAssignment"
    assert dps.count(registration) == 1

    # It connects to the assigned hub at once and sends telemetry the hub records.
    client = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key, hostname=state.assigned_hub, device_id=state.device_id, server_verification_cert=hub.ca_pem)
    send_one_message(hub, device_clients, client, registration, "after-dps-1")

    # Registering again keeps the hub (the only linked one) and is counted.
    again = register(dps.device_client(registration, key))
    assert again.status == "assigned"
    assert again.registration_state.sub_status == "reprovisionedToInitialAssignment"
    assert dps.count(registration) == 2


def test_individual_enrollment_with_a_device_id_and_websockets(hub, dps, registry_manager):
    registration = registration_id("dps-ws")
    device_id = "dps-device-" + uuid.uuid4().hex[:8]
    enrollment = dps.individual(registration, deviceId=device_id)
    key = enrollment["attestation"]["symmetricKey"]["secondaryKey"]
    result = register(dps.device_client(registration, key, websockets=True))
    assert result.status == "assigned"
    assert result.registration_state.device_id == device_id
    assert registry_manager.get_device(device_id).device_id == device_id


def test_enrollment_group_device_with_a_derived_key(hub, dps, registry_manager, device_clients):
    group_id = registration_id("dps-group")
    group_key = new_key()
    dps.group(group_id, attestation={"type": "symmetricKey", "symmetricKey": {"primaryKey": group_key, "secondaryKey": new_key()}},
              initialTwin={"properties": {"desired": {"mode": "eco"}}})
    registrations = [registration_id("dps-member") for _ in range(2)]
    dps.devices.extend(registrations)
    for registration in registrations:
        key = derived_key(group_key, registration)
        result = register(dps.device_client(registration, key))
        assert result.status == "assigned"
        assert result.registration_state.device_id == registration
        assert result.registration_state.assigned_hub == HOST
        assert registry_manager.get_twin(registration).properties.desired["mode"] == "eco"
    dps.enrollments.extend(registrations)

    # The group's registration states, through the service SDK's query.
    states = list(bounded(dps.client.device_registration_state.query, group_id, what="device_registration_state.query"))
    assert sorted(s["registrationId"] for s in states) == sorted(registrations)
    assert all(s["status"] == "assigned" for s in states)

    # A member connects with its derived key and sends telemetry.
    member = registrations[0]
    client = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=derived_key(group_key, member), hostname=HOST, device_id=member, server_verification_cert=hub.ca_pem)
    send_one_message(hub, device_clients, client, member, "group-member-1")

    # The group key itself is not a device key.
    with pytest.raises(CredentialError):
        register(dps.device_client(registration_id("dps-member"), group_key))


def make_certificate(directory, common_name, issuer=None):
    """An EC certificate made with the openssl CLI: self-signed, or signed by `issuer`
    ((cert, key) paths). Returns (cert path, key path)."""
    cert, key = directory / (common_name + ".pem"), directory / (common_name + ".key")
    if issuer is None:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=" + common_name],
            check=True, capture_output=True, timeout=30)
    else:
        request = directory / (common_name + ".csr")
        subprocess.run(
            ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(request), "-subj", "/CN=" + common_name],
            check=True, capture_output=True, timeout=30)
        subprocess.run(
            ["openssl", "x509", "-req", "-in", str(request), "-CA", str(issuer[0]), "-CAkey", str(issuer[1]),
             "-CAcreateserial", "-out", str(cert), "-days", "2"],
            check=True, capture_output=True, timeout=30)
    return cert, key


def test_x509_individual_enrollment(hub, dps, registry_manager, device_clients, tmp_path):
    registration = registration_id("dps-x509")
    cert, key = make_certificate(tmp_path, registration)
    enrollment = dps.individual(
        registration, attestation={"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": cert.read_text()}}}})
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    info = enrollment["attestation"]["x509"]["clientCertificates"]["primary"]["info"]
    assert info["sha256Thumbprint"] == hashlib.sha256(der).hexdigest().upper()

    client = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host=HOST, registration_id=registration, id_scope=dps.id_scope, x509=X509(str(cert), str(key)),
        server_verification_cert=hub.ca_pem)
    result = register(client)
    assert result.status == "assigned"
    assert result.registration_state.device_id == registration
    assert registry_manager.get_device(registration).authentication.type == "selfSigned"

    device = IoTHubDeviceClient.create_from_x509_certificate(
        X509(str(cert), str(key)), hostname=HOST, device_id=registration, server_verification_cert=hub.ca_pem)
    send_one_message(hub, device_clients, device, registration, "x509-dps-1")

    # Another certificate with the same common name is refused.
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other_cert, other_key = make_certificate(other_dir, registration)
    stranger = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host=HOST, registration_id=registration, id_scope=dps.id_scope, x509=X509(str(other_cert), str(other_key)),
        server_verification_cert=hub.ca_pem)
    with pytest.raises(CredentialError):
        register(stranger)


def test_x509_enrollment_group_admits_certificates_its_signing_certificate_issued(hub, dps, registry_manager, tmp_path):
    group_id = registration_id("dps-x509-group")
    ca_cert, ca_key = make_certificate(tmp_path, "dps-test-ca-" + uuid.uuid4().hex[:6])
    dps.group(group_id, attestation={"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": ca_cert.read_text()}}}})
    registration = registration_id("dps-x509-member")
    dps.devices.append(registration)
    dps.enrollments.append(registration)
    cert, key = make_certificate(tmp_path, registration, issuer=(ca_cert, ca_key))
    client = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host=HOST, registration_id=registration, id_scope=dps.id_scope, x509=X509(str(cert), str(key)),
        server_verification_cert=hub.ca_pem)
    result = register(client)
    assert result.status == "assigned"
    assert registry_manager.get_device(registration).authentication.type == "selfSigned"


def test_custom_payload_is_returned(hub, dps):
    registration = registration_id("dps-payload")
    key = dps.individual(registration)["attestation"]["symmetricKey"]["primaryKey"]
    client = dps.device_client(registration, key)
    payload = {"modelId": "dtmi:com:example:Thermostat;1", "firmware": [1, 2, 3]}
    client.provisioning_payload = payload
    result = register(client)
    assert result.status == "assigned"
    assert json.loads(result.registration_state.response_payload) == payload


def test_throttled_requests_are_retried_after_retry_after(hub, dps):
    registration = registration_id("dps-throttled")
    key = dps.individual(registration)["attestation"]["symmetricKey"]["primaryKey"]
    hub.set_faults(throttleNextOperations=2)
    result = register(dps.device_client(registration, key))
    assert result.status == "assigned"
    # Both throttled answers were used up by the SDK's retries; only the registration that went through counts.
    assert hub.request("GET", "local/faults").json()["throttleNextOperations"] == 0
    assert dps.count(registration) == 1


def test_disabled_enrollment_fails_registration_and_creates_no_device(hub, dps, registry_manager):
    registration = registration_id("dps-disabled")
    key = dps.individual(registration, provisioningStatus="disabled")["attestation"]["symmetricKey"]["primaryKey"]
    with pytest.raises((ServiceError, ClientError)) as failure:
        register(dps.device_client(registration, key))
    # The SDK has no outcome for "disabled": it reports the status it did not expect.
    chain = [failure.value, failure.value.__cause__]
    assert any("disabled" in str(error) for error in chain if error is not None), chain
    state = bounded(dps.client.device_registration_state.get, registration, what="device_registration_state.get")
    assert state["status"] == "disabled"
    assert "deviceId" not in state
    with pytest.raises(Exception):
        registry_manager.get_device(registration)


def test_wrong_key_is_refused(hub, dps):
    registration = registration_id("dps-wrong")
    dps.individual(registration)
    with pytest.raises(CredentialError):
        register(dps.device_client(registration, new_key()))
    with pytest.raises(CredentialError):
        register(dps.device_client(registration_id("dps-unknown"), new_key()))
    assert dps.count(registration) == 0


def test_enrollment_crud_with_etags_and_queries(hub, dps):
    registration = registration_id("dps-crud")
    created = dps.individual(registration)
    fetched = dps.client.enrollment.get(registration)
    assert fetched["etag"] == created["etag"]

    # A stale etag is refused; the current one updates.
    updated_body = dict(fetched, provisioningStatus="disabled")
    updated = dps.client.enrollment.create_or_update(registration, updated_body, if_match=created["etag"])
    assert updated["provisioningStatus"] == "disabled"
    assert updated["etag"] != created["etag"]
    assert updated["attestation"]["symmetricKey"] == created["attestation"]["symmetricKey"]
    with pytest.raises(HttpResponseError) as stale:
        dps.client.enrollment.create_or_update(registration, updated_body, if_match=created["etag"])
    assert stale.value.status_code == 412

    listed = [item["registrationId"] for item in dps.client.enrollment.query({"query": "*"})]
    assert registration in listed
    paged = list(dps.client.enrollment.query({"query": "*"}, top=1))
    assert len(paged) == len(listed)
    assert dps.client.enrollment.get_attestation_mechanism(registration)["type"] == "symmetricKey"

    # Only LocalHub can be a linked hub; ids follow DPS's rule.
    with pytest.raises(HttpResponseError) as foreign:
        dps.client.enrollment.create_or_update(
            registration_id("dps-foreign"), {"registrationId": "x", "attestation": {"type": "symmetricKey"}, "iotHubs": ["elsewhere.azure-devices.net"]})
    assert foreign.value.status_code == 400
    with pytest.raises(HttpResponseError) as bad_id:
        dps.client.enrollment.create_or_update("Not_Valid!", {"attestation": {"type": "symmetricKey"}})
    assert bad_id.value.status_code == 400
    with pytest.raises(HttpResponseError) as tpm:
        dps.client.enrollment.create_or_update(registration_id("dps-tpm"), {"attestation": {"type": "tpm", "tpm": {"endorsementKey": "AA=="}}})
    assert tpm.value.status_code == 400

    dps.client.enrollment.delete(registration)
    with pytest.raises(ResourceNotFoundError):
        dps.client.enrollment.get(registration)


def test_service_api_refuses_other_credentials(hub, dps):
    from azure.iot.deviceprovisioning import DeviceProvisioningClient
    fields = parse_connection_string(dps.connection_string)
    wrong = "HostName={};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={}".format(fields["HostName"], new_key())
    client = DeviceProvisioningClient.from_connection_string(wrong, connection_verify=hub.ca_path, connection_timeout=20, read_timeout=30)
    with pytest.raises(ClientAuthenticationError):
        list(client.enrollment.query({"query": "*"}))
    # The IoT Hub owner's token is not the provisioning service's.
    response = hub.request("POST", "enrollments/query", json={"query": "*"})
    assert response.status_code == 401


# -- hostile input over raw MQTT (paho-mqtt) ------------------------------------------------------

class RawDevice:
    """A paho-mqtt client speaking DPS's MQTT by hand."""

    def __init__(self, hub, id_scope, client_id, registration_id, key):
        self.messages = queue.Queue()
        self.connected = threading.Event()
        self.result_code = None
        self.client = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(
            "{}/registrations/{}/api-version=2019-03-31".format(id_scope, registration_id),
            sas_token("{}/registrations/{}".format(id_scope, registration_id), key) if key else None)
        context = ssl.create_default_context(cafile=hub.ca_path)
        self.client.tls_set_context(context)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda client, userdata, message: self.messages.put((message.topic, message.payload))

    def _on_connect(self, client, userdata, flags, rc):
        self.result_code = rc
        self.connected.set()

    def connect(self):
        self.client.connect(HOST, MQTT_PORT, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(15), "no CONNACK within 15 s"
        return self.result_code

    def request(self, topic, payload, timeout=15):
        self.client.publish(topic, payload, qos=1)
        topic, body = self.messages.get(timeout=timeout)
        return topic, body

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def raw_device(hub, dps):
    devices = []

    def make(registration_id, key, client_id=None):
        device = RawDevice(hub, dps.id_scope, client_id or registration_id, registration_id, key)
        devices.append(device)
        return device

    yield make
    for device in devices:
        device.close()


@pytest.mark.parametrize("bad_id", ["Upper-Case", "-leading-dash", "with space", "slash/inside", "x" * 129, "ümlaut"])
def test_malformed_registration_ids_are_refused_at_connect(hub, dps, raw_device, bad_id):
    device = raw_device(bad_id, new_key())
    assert device.connect() != 0


def test_client_id_must_be_the_registration_id(hub, dps, raw_device):
    registration = registration_id("dps-raw")
    key = dps.individual(registration)["attestation"]["symmetricKey"]["primaryKey"]
    assert raw_device(registration, key, client_id="someone-else").connect() == 2


def test_unknown_operation_ids_huge_payloads_and_foreign_registration_ids(hub, dps, raw_device):
    registration = registration_id("dps-raw")
    key = dps.individual(registration)["attestation"]["symmetricKey"]["primaryKey"]
    device = raw_device(registration, key)
    assert device.connect() == 0
    device.client.subscribe("$dps/registrations/res/#", qos=1)

    topic, body = device.request("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1&operationId=4.nothing.here", b" ")
    assert topic.startswith("$dps/registrations/res/404/?$rid=1"), topic
    assert json.loads(body)["errorCode"] // 1000 == 404

    huge = json.dumps({"registrationId": registration, "payload": {"blob": "x" * 200_000}})
    topic, body = device.request("$dps/registrations/PUT/iotdps-register/?$rid=2", huge)
    assert topic.startswith("$dps/registrations/res/413/?$rid=2"), topic

    topic, body = device.request("$dps/registrations/PUT/iotdps-register/?$rid=3", json.dumps({"registrationId": "someone-else"}))
    assert topic.startswith("$dps/registrations/res/400/?$rid=3"), topic

    topic, body = device.request("$dps/registrations/PUT/iotdps-register/?$rid=4", b"{not json")
    assert topic.startswith("$dps/registrations/res/400/?$rid=4"), topic
    assert dps.count(registration) == 0

    # The device's own operation answers; after it the registration is counted once.
    topic, body = device.request("$dps/registrations/PUT/iotdps-register/?$rid=5", json.dumps({"registrationId": registration}))
    assert topic.startswith("$dps/registrations/res/202/?$rid=5&retry-after="), topic
    operation = json.loads(body)
    assert operation["status"] == "assigning"
    topic, body = device.request(
        "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=6&operationId=" + operation["operationId"], b" ")
    assert topic.startswith("$dps/registrations/res/200/?$rid=6"), topic
    assert json.loads(body)["status"] == "assigned"
    assert dps.count(registration) == 1
