"""`iothub-sidecar serve --dps-id-scope …` against `iothub-sidecar hub`'s Device Provisioning
Service: the sidecar registers with a symmetric key and sends telemetry; a restart uses the
assignment cached in the state directory (the hub counts no second registration); a device
deleted at the hub makes the sidecar register again; a disabled enrollment is a clear
problem+json on /readyz and /status."""
import http.client
import json
import os
import ssl
import stat
import subprocess
import tempfile
import time

from sidecar_support import BINARY, Sidecar, StandaloneHub

DPS_API_VERSION = "2021-10-01"
HUB_API_VERSION = "2021-04-12"


def dps_request(hub, method, path, body=None):
    token = subprocess.run(
        [BINARY, "sas-token", "--connection-string-file", os.path.join(hub.data_dir, "provisioning-service-connection-string")],
        check=True, capture_output=True, text=True).stdout.strip()
    context = ssl.create_default_context(cafile=os.path.join(hub.data_dir, "ca.pem"))
    connection = http.client.HTTPSConnection("localhost", hub.https_port, context=context, timeout=30)
    try:
        headers = {"Authorization": token}
        if body is not None:
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        separator = "&" if "?" in path else "?"
        connection.request(method, path + separator + "api-version=" + DPS_API_VERSION, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def enroll(hub, registration_id, enabled=True):
    status, body = dps_request(hub, "PUT", "/enrollments/" + registration_id, {
        "registrationId": registration_id, "attestation": {"type": "symmetricKey"},
        "provisioningStatus": "enabled" if enabled else "disabled"})
    assert status == 200, body
    return json.loads(body)["attestation"]["symmetricKey"]["primaryKey"]


def registration_count(sidecar, registration_id):
    reply = sidecar.hub("GET", "/local/provisioning")
    assert reply.status == 200, reply
    return next((entry["count"] for entry in reply.json()["registrations"] if entry["registrationId"] == registration_id), 0)


def provisioned_sidecar(hub, registration_id, key, state_dir):
    directory = tempfile.mkdtemp(prefix="dps-key-")
    key_file = os.path.join(directory, "key")
    with open(key_file, "w") as handle:
        handle.write(key)
    os.chmod(key_file, 0o600)
    with open(os.path.join(hub.data_dir, "dps-id-scope")) as handle:
        id_scope = handle.read().strip()
    # The DPS options from the environment, the key from a file.
    return Sidecar(
        hub=hub, device=hub.device, state_dir=state_dir, extra_args=["--key-file", key_file],
        env={"IOTHUB_DEVICE_CONNECTION_STRING": "", "IOTHUB_DPS_ID_SCOPE": id_scope, "IOTHUB_DPS_REGISTRATION_ID": registration_id,
             "IOTHUB_DPS_HOST": "localhost"})


def wait_for(condition, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    return condition()


def test_provisions_caches_the_assignment_and_registers_again_after_the_device_is_deleted():
    hub = StandaloneHub("bootstrap-device")
    state_dir = os.path.join(tempfile.mkdtemp(prefix="dps-state-"), "state")
    sidecar = None
    try:
        key = enroll(hub, "dps-sensor-1")
        sidecar = provisioned_sidecar(hub, "dps-sensor-1", key, state_dir).wait_ready()
        status = sidecar.get("/status").json()
        assert status["identity"]["deviceId"] == "dps-sensor-1"
        assert status["identity"]["hostName"] == "localhost"
        provisioning = status["provisioning"]
        assert provisioning["assignedHub"] == "localhost" and provisioning["deviceId"] == "dps-sensor-1", provisioning
        assert provisioning["substatus"] == "initialAssignment" and provisioning["source"] == "dps", provisioning
        assert "registeredAt" in provisioning
        assert registration_count(sidecar, "dps-sensor-1") == 1

        reply = sidecar.post("/messages", body=b"after provisioning")
        assert reply.status == 200, reply
        telemetry = sidecar.hub("GET", "/local/telemetry?after=0&timeout=5&deviceId=dps-sensor-1").json()
        assert any(entry.get("deviceId") == "dps-sensor-1" for entry in telemetry["messages"]), telemetry

        cache = os.path.join(state_dir, "provisioning.json")
        assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
        with open(cache) as handle:
            cached = json.load(handle)
        assert cached["registrationId"] == "dps-sensor-1" and cached["result"]["deviceId"] == "dps-sensor-1"
        assert key not in open(cache).read()

        # A restart takes the cached assignment: no second registration.
        assert sidecar.stop() == 0
        sidecar = provisioned_sidecar(hub, "dps-sensor-1", key, state_dir).wait_ready()
        assert sidecar.get("/status").json()["provisioning"]["source"] == "cache"
        assert registration_count(sidecar, "dps-sensor-1") == 1

        # The device is deleted at the hub: the hub refuses it, the sidecar registers again.
        reply = sidecar.hub("DELETE", "/devices/dps-sensor-1?api-version=" + HUB_API_VERSION, headers={"If-Match": "*"})
        assert reply.status == 204, reply
        assert wait_for(lambda: sidecar.get("/status").json()["provisioning"]["source"] == "dps"), sidecar.output()
        assert registration_count(sidecar, "dps-sensor-1") == 2
        assert wait_for(lambda: sidecar.get("/readyz").status == 200), sidecar.output()
        status = sidecar.get("/status").json()
        assert status["provisioning"]["substatus"] == "reprovisionedToInitialAssignment", status
        assert sidecar.post("/messages", body=b"after the device came back").status == 200

        # POST /provisioning registers on demand; /events tells.
        events = sidecar.connection(timeout=30)
        events.request("GET", "/events")
        stream = events.getresponse()
        assert stream.readline().startswith(b"event: connection")
        reply = sidecar.post("/provisioning")
        assert reply.status == 200, reply
        assert reply.json()["deviceId"] == "dps-sensor-1"
        assert registration_count(sidecar, "dps-sensor-1") == 3
        lines = [stream.readline() for _ in range(6)]
        events.close()
        assert b"event: provisioning\n" in lines, lines
        data = json.loads(lines[lines.index(b"event: provisioning\n") + 1][len(b"data: "):])
        assert data["registrationId"] == "dps-sensor-1" and data["source"] == "dps", data
    finally:
        if sidecar:
            sidecar.stop()
        hub.stop()


def test_a_disabled_enrollment_is_a_clear_problem_on_readyz_and_status():
    hub = StandaloneHub("bootstrap-device-2")
    sidecar = None
    try:
        key = enroll(hub, "dps-retired-1", enabled=False)
        sidecar = provisioned_sidecar(hub, "dps-retired-1", key, None)
        readiness = wait_for(lambda: _reply_or_none(sidecar, "/readyz"))
        assert readiness.status == 503, readiness
        assert readiness.header("Content-Type").startswith("application/problem+json")
        problem = readiness.json()
        assert problem["code"] == "ClientError" and "disabled" in problem["detail"] and "Provisioning" in problem["detail"], problem
        status = sidecar.get("/status")
        assert status.status == 503 and status.json()["code"] == "ClientError" and "disabled" in status.json()["detail"], status
        assert registration_count(sidecar, "dps-retired-1") == 1
        # POST /provisioning tries again and says why it failed.
        reply = sidecar.post("/provisioning")
        assert reply.status == 500 and reply.json()["code"] == "ClientError", reply
    finally:
        if sidecar:
            sidecar.stop()
        hub.stop()


def test_a_group_key_gives_the_device_its_derived_key():
    hub = StandaloneHub("bootstrap-device-3")
    sidecar = None
    try:
        status, body = dps_request(hub, "PUT", "/enrollmentGroups/floor-3", {
            "enrollmentGroupId": "floor-3", "attestation": {"type": "symmetricKey"}, "provisioningStatus": "enabled"})
        assert status == 200, body
        group_key = json.loads(body)["attestation"]["symmetricKey"]["primaryKey"]
        directory = tempfile.mkdtemp(prefix="dps-group-")
        key_file = os.path.join(directory, "group.key")
        with open(key_file, "w") as handle:
            handle.write(group_key + "\n")
        with open(os.path.join(hub.data_dir, "dps-id-scope")) as handle:
            id_scope = handle.read().strip()
        payload_file = os.path.join(directory, "payload.json")
        with open(payload_file, "w") as handle:
            json.dump({"site": "lab"}, handle)
        sidecar = Sidecar(
            hub=hub, device=hub.device,
            extra_args=["--dps-id-scope", id_scope, "--registration-id", "lamp-7", "--group-key-file", key_file, "--dps-host", "localhost",
                        "--dps-payload-file", payload_file],
            env={"IOTHUB_DEVICE_CONNECTION_STRING": ""}).wait_ready()
        provisioning = sidecar.get("/status").json()["provisioning"]
        assert provisioning["deviceId"] == "lamp-7" and provisioning["payload"] == {"site": "lab"}, provisioning
        assert sidecar.post("/messages", body=b"from the group").status == 200
    finally:
        if sidecar:
            sidecar.stop()
        hub.stop()


def test_an_x509_enrollment_provisions_with_the_certificate():
    hub = StandaloneHub("bootstrap-device-4")
    sidecar = None
    try:
        directory = tempfile.mkdtemp(prefix="dps-x509-")
        certificate, key = os.path.join(directory, "device.pem"), os.path.join(directory, "device.key")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", certificate,
             "-days", "2", "-subj", "/CN=camera-2"], check=True, capture_output=True)
        with open(certificate) as handle:
            pem = handle.read()
        status, body = dps_request(hub, "PUT", "/enrollments/camera-2", {
            "registrationId": "camera-2", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}}})
        assert status == 200, body
        with open(os.path.join(hub.data_dir, "dps-id-scope")) as handle:
            id_scope = handle.read().strip()
        sidecar = Sidecar(
            hub=hub, device=hub.device,
            extra_args=["--dps-id-scope", id_scope, "--registration-id", "camera-2", "--x509-cert-file", certificate, "--x509-key-file", key,
                        "--dps-host", "localhost"],
            env={"IOTHUB_DEVICE_CONNECTION_STRING": ""}).wait_ready()
        status = sidecar.get("/status").json()
        assert status["provisioning"]["deviceId"] == "camera-2" and status["identity"]["authentication"] == "x509", status
        assert sidecar.post("/messages", body=b"from a certificate").status == 200
    finally:
        if sidecar:
            sidecar.stop()
        hub.stop()


def test_dps_options_are_checked():
    hub_less = [BINARY, "serve", "--dps-id-scope", "0ne00000001", "--registration-id", "r-1"]
    result = subprocess.run(hub_less, capture_output=True, text=True, timeout=30, env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode != 0 and "exactly one credential" in result.stderr, result.stderr
    result = subprocess.run(
        hub_less + ["--module-id", "m"], capture_output=True, text=True, timeout=30, env={"PATH": os.environ.get("PATH", ""), "IOTHUB_DEVICE_KEY": "a2V5"})
    assert result.returncode != 0 and "not modules" in result.stderr, result.stderr
    result = subprocess.run(
        [BINARY, "serve", "--registration-id", "r-1"], capture_output=True, text=True, timeout=30, env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode != 0 and "--dps-id-scope" in result.stderr, result.stderr


def _reply_or_none(sidecar, path):
    try:
        return sidecar.get(path, timeout=5)
    except OSError:
        return None
