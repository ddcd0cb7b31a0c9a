"""Shared fixtures of the conformance suite: Microsoft's unmodified Python SDKs
(`azure-iot-device` for devices, `azure-iot-hub` for the service side) against LocalHub.

The session starts one `iothub-sidecar hub` on IoT Hub's fixed ports (MQTT 8883, HTTPS and
WebSockets 443, blob storage 10000), because the SDKs cannot be pointed at other ports.
`scripts/conformance` runs the suite in a private network namespace so those ports are free.
Each test works with devices of its own, so tests do not depend on each other's state.
"""
import base64
import ctypes
import hashlib
import hmac
import os
import queue
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import requests
from azure.iot.device.exceptions import NoConnectionError

ROOT = Path(__file__).resolve().parents[2]
BINARY = os.environ.get("IOTHUB_SIDECAR_BIN") or str(ROOT / ".build" / "debug" / "iothub-sidecar")
HOST = "localhost"
MQTT_PORT, HTTPS_PORT, BLOB_PORT = 8883, 443, 10000
# The IoT Edge device the hub plays the Edge runtime for (its workload API on a unix socket).
EDGE_DEVICE = "edge-conformance"
READY_TIMEOUT = 20
STOP_TIMEOUT = 15
# Longest any single test may run before the process dumps every thread's stack and exits, so
# a hang can never stall CI (pytest-timeout is not a dependency).
TEST_WATCHDOG_SECONDS = 150
# The session's hub, for the report hook.
_RUNNING_HUB = []


def bounded(function, *args, timeout=30, what=None, **kwargs):
    """Runs a blocking SDK call on a daemon thread and waits at most `timeout` seconds for it.

    Re-raises the call's exception; fails the test if the call is still running at the deadline.
    """
    outcome = {}

    def run():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=run, name="bounded:" + (what or function.__name__), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail("{} did not return within {} s".format(what or getattr(function, "__name__", "call"), timeout))
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def sas_token(resource_uri, key, ttl=3600, key_name=None, expiry=None):
    """A SAS token computed with Python's standard library (independently of the hub)."""
    expiry = int(expiry if expiry is not None else time.time() + ttl)
    encoded = urllib.parse.quote(resource_uri, safe="")
    mac = hmac.new(base64.b64decode(key), (encoded + "\n" + str(expiry)).encode(), hashlib.sha256)
    signature = urllib.parse.quote(base64.b64encode(mac.digest()).decode(), safe="")
    token = "SharedAccessSignature sr={}&sig={}&se={}".format(encoded, signature, expiry)
    return token + ("&skn=" + key_name if key_name else "")


def parse_connection_string(text):
    return dict(part.split("=", 1) for part in text.strip().split(";") if part)


def new_key():
    return base64.b64encode(secrets.token_bytes(32)).decode()


def unique_id(prefix):
    return "{}-{}".format(prefix, uuid.uuid4().hex[:10])


def _die_with_parent():
    """In the hub's child process: get SIGTERM if pytest dies, so no hub outlives the suite."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LocalHubProcess:
    """A running `iothub-sidecar hub` and helpers for its HTTPS and `/local` APIs."""

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)
        # The hub's stderr (its log), kept for post-mortems.
        self.log_path = self.data_dir.parent / "localhub.log"
        self.process = None
        self.stdout_lines = []
        self.ca_path = None
        self.ca_pem = None
        self.service_connection_string = None
        self._stdout_queue = queue.Queue()
        self._stderr_lines = []
        self._session = requests.Session()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self):
        if not os.access(BINARY, os.X_OK):
            pytest.fail(
                "LocalHub binary {} not found or not executable: build it with "
                "`swift build --product iothub-sidecar` or set IOTHUB_SIDECAR_BIN".format(BINARY),
                pytrace=False)
        command = [
            BINARY, "hub", "--data-dir", str(self.data_dir), "--hostname", HOST,
            "--mqtt-port", str(MQTT_PORT), "--https-port", str(HTTPS_PORT), "--blob-port", str(BLOB_PORT),
            "--edge-device", EDGE_DEVICE, "--edge-workload-socket", str(self.data_dir / "workload.sock"),
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, preexec_fn=_die_with_parent)
        threading.Thread(target=self._pump, args=(self.process.stdout, self._stdout_queue), daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                pytest.fail(self._startup_failure("did not print 'ready' within {} s".format(READY_TIMEOUT)), pytrace=False)
            try:
                line = self._stdout_queue.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.process.poll() is not None:
                    time.sleep(0.2)  # let the stderr pump catch up
                    pytest.fail(self._startup_failure("exited with status {}".format(self.process.returncode)), pytrace=False)
                continue
            if line is None:
                self.process.wait(timeout=5)
                time.sleep(0.2)
                pytest.fail(self._startup_failure("closed its output (status {})".format(self.process.returncode)), pytrace=False)
            self.stdout_lines.append(line)
            if line == "ready":
                break

        self.ca_path = str(self.data_dir / "ca.pem")
        self.ca_pem = Path(self.ca_path).read_text()
        self.service_connection_string = (self.data_dir / "service-connection-string").read_text().strip()
        fields = parse_connection_string(self.service_connection_string)
        assert fields["HostName"] == HOST, self.service_connection_string
        self.owner_key_name = fields["SharedAccessKeyName"]
        self.owner_key = fields["SharedAccessKey"]

    def _startup_failure(self, what):
        return "LocalHub ({}) {}.\nstdout:\n{}\nstderr:\n{}".format(
            BINARY, what, "\n".join(self.stdout_lines) or "(none)", "\n".join(self._stderr_lines[-60:]) or "(none)")

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink.put(line.rstrip("\n"))
        sink.put(None)

    def _pump_stderr(self):
        with open(self.log_path, "w") as log:
            for line in self.process.stderr:
                log.write(line)
                log.flush()
                self._stderr_lines.append(line.rstrip("\n"))

    @property
    def alive(self):
        return self.process is not None and self.process.poll() is None

    def restart(self):
        """Starts the hub again on the same data directory (after a crash a test reported), so
        one hub bug does not fail every later test."""
        self.kill()
        self.stdout_lines = []
        self._stdout_queue = queue.Queue()
        self._stderr_lines = []
        self.log_path = self.log_path.with_name(self.log_path.stem + "-restarted.log")
        self.start()

    def stop(self):
        """SIGTERM, as a supervisor would; the hub must exit cleanly and promptly. Returns None
        when the hub was no longer running."""
        if not self.alive:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("LocalHub did not exit within {} s of SIGTERM".format(STOP_TIMEOUT))

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def assert_alive(self, when):
        if self.process.poll() is not None:
            time.sleep(0.3)  # let the stderr pump catch up
            pytest.fail("LocalHub exited {} with status {}; its log is {}.\nLast lines of its stderr:\n{}".format(
                when, self.process.returncode, self.log_path, self.stderr_tail), pytrace=False)

    @property
    def stderr_tail(self):
        """The lines of the hub's stderr that tell why it stopped, then its last lines."""
        lines = self._stderr_lines
        first = next((index for index, line in enumerate(lines)
                      if re.search(r"Fatal error|BUG DETECTED|Program crashed|iothub-sidecar hub:", line)), None)
        if first is None:
            return "\n".join(lines[-30:])
        return "\n".join(lines[max(0, first - 3):first + 8])

    # -- HTTPS helpers --------------------------------------------------------------------------

    def owner_token(self, ttl=3600):
        return sas_token(HOST, self.owner_key, ttl=ttl, key_name=self.owner_key_name)

    def request(self, method, path, timeout=30, **kwargs):
        """An owner-authorised request to the hub's HTTPS listener (service API or /local)."""
        headers = {"Authorization": self.owner_token()}
        headers.update(kwargs.pop("headers", {}))
        url = "https://{}:{}/{}".format(HOST, HTTPS_PORT, path.lstrip("/"))
        return self._session.request(method, url, headers=headers, verify=self.ca_path, timeout=timeout, **kwargs)

    def device_connection_string(self, device_id, key):
        return "HostName={};DeviceId={};SharedAccessKey={}".format(HOST, device_id, key)

    def device_token(self, device_id, key, ttl=3600):
        return sas_token("{}/devices/{}".format(HOST, device_id), key, ttl=ttl)

    def status(self):
        response = self.request("GET", "local/status")
        assert response.status_code == 200, response.text
        return response.json()

    def is_connected(self, device_id):
        return device_id in self.status()["connected"]

    def transport_of(self, device_id):
        """How the hub says the device is connected now: mqtt, mqtt-websockets, or None."""
        return next((c["transport"] for c in self.status()["connections"] if c["clientId"] == device_id), None)

    def wait_until(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        pytest.fail("timed out after {} s waiting until {}".format(timeout, what))

    def send_cloud_to_device(self, device_id, body, headers=None):
        response = self.request("POST", "local/devices/{}/messages".format(urllib.parse.quote(device_id, safe="")),
                                data=body, headers=headers or {})
        assert response.status_code == 202, response.text
        return response.json()["messageId"]

    def telemetry(self, device_id, count, timeout=15):
        """Long-polls /local/telemetry until `count` telemetry messages of `device_id` arrived
        (or the deadline passes); returns what arrived, in order. Events the hub emits (when a
        test routes them to the built-in endpoint) are left out."""
        messages, cursor = [], 0
        deadline = time.monotonic() + timeout
        while len(messages) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            response = self.request(
                "GET", "local/telemetry",
                params={"after": cursor, "limit": 1000, "timeout": max(1, min(int(remaining), 10)), "deviceId": device_id,
                        "messageSource": "Telemetry"},
                timeout=remaining + 15)
            assert response.status_code == 200, response.text
            page = response.json()
            assert page["dropped"] == 0, page
            messages.extend(page["messages"])
            cursor = page["next"]
        return messages

    def file_uploads(self, correlation_id, timeout=15):
        """Long-polls /local/file-uploads for the notification of `correlation_id`."""
        cursor, deadline = 0, time.monotonic() + timeout
        while time.monotonic() < deadline:
            remaining = deadline - time.monotonic()
            response = self.request("GET", "local/file-uploads",
                                    params={"after": cursor, "timeout": max(1, min(int(remaining), 10))},
                                    timeout=remaining + 15)
            assert response.status_code == 200, response.text
            page = response.json()
            for note in page["notifications"]:
                if note["correlationId"] == correlation_id:
                    return note
            cursor = page["next"]
        return None

    def set_faults(self, **faults):
        response = self.request("PUT", "local/faults", json=faults)
        assert response.status_code == 200, response.text
        return response.json()

    def clear_faults(self):
        response = self.request("DELETE", "local/faults")
        assert response.status_code in (200, 204), response.text


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """One LocalHub for the whole session, on IoT Hub's fixed ports."""
    process = LocalHubProcess(tmp_path_factory.mktemp("localhub"))
    process.start()
    _RUNNING_HUB.append(process)
    # The service SDK (msrest/requests) trusts the hub's CA through REQUESTS_CA_BUNDLE.
    previous = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = process.ca_path
    try:
        yield process
    finally:
        if previous is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = previous
        _RUNNING_HUB.remove(process)
        status = process.stop()
        assert status in (0, None), "LocalHub exited with status {} after SIGTERM.\nstderr:\n{}".format(
            status, process.stderr_tail)


@pytest.fixture(autouse=True)
def _watchdog(request):
    """A hard bound on every test: on a hang, dump all stacks and exit (the hub follows, via
    PR_SET_PDEATHSIG)."""
    import faulthandler
    faulthandler.dump_traceback_later(TEST_WATCHDOG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _hub_health(request):
    """After a test the hub must have survived it (else the test fails, with the hub's own words,
    and the next test gets a restarted hub); fault injection, hub-wide, is cleared so no test
    leaves faults for the next."""
    if "hub" not in request.fixturenames:
        yield
        return
    hub = request.getfixturevalue("hub")
    if not hub.alive:
        hub.restart()  # an earlier test crashed it, and failed for it
    yield
    if not hub.alive and getattr(request.node, "conformance_call_failed", False):
        return  # the failure report already carries the hub's crash (pytest_runtest_makereport)
    hub.assert_alive("during this test")
    hub.clear_faults()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """When the hub died during a failing test, puts the hub's last words into that test's
    report, as the failure itself (a dropped connection) would not say why."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call":
        return
    item.conformance_call_failed = report.failed
    error = call.excinfo.value if call.excinfo is not None else None
    response = getattr(error, "response", None)
    if report.failed and response is not None and hasattr(response, "status_code"):
        # msrest's HttpOperationError says only "invalid status code"; show what the hub answered.
        request = response.request
        report.sections.append(("service API exchange", "{} {}\nIf-Match: {}\n-> {} {}\n{}".format(
            request.method, request.url, request.headers.get("If-Match"), response.status_code,
            response.headers.get("iothub-errorcode"), response.text[:2000])))
    if report.failed and _RUNNING_HUB and _RUNNING_HUB[0].process is not None and not _RUNNING_HUB[0].alive:
        hub = _RUNNING_HUB[0]
        time.sleep(0.3)  # let the stderr pump catch up
        report.sections.append(("LocalHub died during this test", "status {}; its log is {}\n{}".format(
            hub.process.returncode, hub.log_path, hub.stderr_tail)))


@pytest.fixture(scope="session")
def registry_manager(hub):
    from azure.iot.hub import IoTHubRegistryManager
    manager = IoTHubRegistryManager.from_connection_string(hub.service_connection_string)
    # msrest waits up to 100 s per request by default; a local hub answers at once (a method
    # call waits at most its response timeout), so bound every service call tighter.
    manager.protocol.config.connection.timeout = 40
    yield manager
    if manager.amqp_svc_client is not None:
        manager.amqp_svc_client.disconnect_sync()
        manager.amqp_svc_client = None


@pytest.fixture
def sas_device(hub, registry_manager):
    """Creates SAS devices through the service SDK; deletes them after the test.

    Call it with an id prefix; returns (device_id, primary_key, connection_string)."""
    created = []

    def create(prefix="device"):
        device_id = unique_id(prefix)
        primary, secondary = new_key(), new_key()
        device = bounded(registry_manager.create_device_with_sas, device_id, primary, secondary, "enabled",
                         what="create_device_with_sas")
        created.append(device_id)
        assert device.authentication.symmetric_key.primary_key == primary
        return device_id, primary, hub.device_connection_string(device_id, primary)

    yield create
    for device_id in created:
        try:
            registry_manager.delete_device(device_id)
        except Exception:  # noqa: BLE001 - already deleted by the test
            pass


@pytest.fixture
def device_clients():
    """Tracks SDK device clients and shuts every one of them down after the test."""
    clients = []

    def track(client):
        clients.append(client)
        return client

    yield track
    errors = []
    for client in clients:
        try:
            try:
                bounded(client.shutdown, timeout=20, what="client.shutdown")
            except NoConnectionError:
                # The hub dropped the connection while shutdown's disconnect ran (a test that
                # deletes its device does that); the SDK gave up before shutting its pipeline
                # down, and a second shutdown, now disconnected, finishes it.
                bounded(client.shutdown, timeout=20, what="client.shutdown")
        except BaseException as error:  # noqa: BLE001 - report after shutting all down
            errors.append(error)
    if errors:
        raise errors[0]


@pytest.fixture
def connect_device(hub, sas_device, device_clients):
    """Creates a SAS device and a connected IoTHubDeviceClient for it (from its connection string).

    Returns (device_id, client, primary_key). Keyword arguments go to create_from_connection_string."""
    from azure.iot.device import IoTHubDeviceClient

    def connect(prefix="device", **kwargs):
        device_id, key, connection_string = sas_device(prefix)
        client = device_clients(IoTHubDeviceClient.create_from_connection_string(
            connection_string, server_verification_cert=hub.ca_pem, **kwargs))
        bounded(client.connect, timeout=30, what="connect")
        hub.wait_until(lambda: hub.is_connected(device_id), 10, "the hub lists {} as connected".format(device_id))
        return device_id, client, key

    return connect


def pytest_configure(config):
    # The SDKs ask for TLS 1.2 exactly, which Python 3.10+ marks as deprecated; not our concern.
    config.addinivalue_line("filterwarnings", "ignore:ssl.PROTOCOL_TLSv1_2 is deprecated:DeprecationWarning")


def pytest_report_header(config):
    return "LocalHub binary: {}".format(BINARY)


def json_body(message):
    """The body of a /local/telemetry record as bytes."""
    return base64.b64decode(message["body"])

