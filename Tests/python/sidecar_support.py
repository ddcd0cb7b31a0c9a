"""Runs `iothub-sidecar serve --local-hub` for the tests and talks to it and to its hub with
the standard library only: plain HTTP to the sidecar (TCP or a unix socket), HTTPS with the
hub's CA to the hub's service API and /local API."""
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse

BINARY = os.environ.get("IOTHUB_SIDECAR_BIN", ".build/debug/iothub-sidecar")
API_VERSION = "2021-04-12"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Reply:
    """An HTTP answer: status, headers (as a case-insensitive message), body bytes."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name)

    def __repr__(self):
        return "Reply({}, {!r})".format(self.status, self.body[:300])


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class StandaloneHub:
    """`iothub-sidecar hub` in its own process: for identities --local-hub cannot give, and for a
    hub that outlives the sidecars connected to it."""

    def __init__(self, device, hostname=None, extra_args=()):
        self.data_dir = tempfile.mkdtemp(prefix="hub-")
        self.device = device
        self.mqtt_port, self.https_port = free_port(), free_port()
        self.process = subprocess.Popen(
            [BINARY, "hub", "--data-dir", self.data_dir, "--mqtt-port", str(self.mqtt_port), "--https-port", str(self.https_port),
             "--blob-port", str(free_port()), "--device", device] + (["--hostname", hostname] if hostname else [])
            + list(extra_args),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.connection_string = None
        for line in self.process.stdout:
            if line.strip().startswith("Device {}:".format(device)):
                self.connection_string = line.split(":", 1)[1].strip()
            if line.strip() == "ready":
                break
        assert self.connection_string

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


class Sidecar:
    """One sidecar process with its embedded local hub, or connected to a `StandaloneHub`.

    Its state directory (`--state-dir`, the telemetry outbox) is its own temporary one unless
    `state_dir` names another (a restart that finds what the last run left); `state_dir=False`
    gives none, so the sidecar picks its default.

    With a `StandaloneHub`, the sidecar connects with the hub's connection string and trusts
    the hub's CA, unless `identity_args` gives the credential options instead, or `ca_file`
    another CA file (False: none)."""

    def __init__(self, extra_args=(), env=None, listen=None, device="sidecar-device", state_dir=None, hub=None, wrapper=(),
                 pass_fds=(), identity_args=None, ca_file=None):
        self.data_dir = tempfile.mkdtemp(prefix="sidecar-test-")
        self.state_dir = os.path.join(self.data_dir, "state") if state_dir is None else state_dir
        self.port = free_port()
        self.listen = listen or "127.0.0.1:{}".format(self.port)
        self.device = device
        environment = dict(os.environ)
        environment.pop("IOTHUB_DEVICE_CONNECTION_STRING", None)
        environment.pop("IOTHUB_SIDECAR_STATE_DIR", None)
        if hub is None:
            self.hub_data_dir = self.data_dir
            self.hub_https_port = free_port()
            self.hub_mqtt_port = free_port()
            self.hub_blob_port = free_port()
            args = [
                BINARY, "serve", "--local-hub", "--local-hub-data-dir", self.data_dir,
                "--local-hub-mqtt-port", str(self.hub_mqtt_port), "--local-hub-https-port", str(self.hub_https_port),
                "--local-hub-blob-port", str(self.hub_blob_port), "--local-hub-device", device,
            ]
        else:
            assert hub.device == device or identity_args is not None
            self.hub_data_dir = hub.data_dir
            self.hub_https_port = hub.https_port
            self.hub_mqtt_port = hub.mqtt_port
            if identity_args is None:
                environment["IOTHUB_DEVICE_CONNECTION_STRING"] = hub.connection_string
            if ca_file is None:
                ca_file = os.path.join(hub.data_dir, "ca.pem")
            args = [BINARY, "serve"] + (["--server-verification-cert", ca_file] if ca_file else []) + [
                "--mqtt-port", str(hub.mqtt_port), "--https-port", str(hub.https_port),
            ] + list(identity_args or [])
        args += ["--listen", self.listen, "--connection-retry-interval", "1"]
        if self.state_dir:
            args += ["--state-dir", self.state_dir]
        args += list(extra_args)
        # A command the sidecar runs under (e.g. a private mount namespace with a small file system).
        args = list(wrapper) + args
        environment.update(env or {})
        self.log_path = os.path.join(self.data_dir, "sidecar.log")
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=environment, pass_fds=pass_fds)
        self._service_token = None

    # -- lifecycle

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("the sidecar exited with {}:\n{}".format(self.process.returncode, self.output()))
            try:
                if self.request("GET", "/readyz", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("the sidecar did not become ready:\n" + self.output())

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as log:
            return log.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode

    # -- the sidecar's API

    def connection(self, timeout=60):
        if self.listen.startswith("unix:"):
            return UnixHTTPConnection(self.listen[5:], timeout=timeout)
        host, port = self.listen.rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=60):
        connection = self.connection(timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = dict({"Content-Type": "application/json"}, **(headers or {}))
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            connection.close()

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, body=None, **kwargs):
        return self.request("POST", path, body=body, **kwargs)

    # -- the hub's service API and /local API

    @property
    def ca_path(self):
        return os.path.join(self.hub_data_dir, "ca.pem")

    def service_token(self):
        if self._service_token is None:
            output = subprocess.run(
                [BINARY, "sas-token", "--connection-string-file", os.path.join(self.hub_data_dir, "service-connection-string")],
                check=True, capture_output=True, text=True)
            self._service_token = output.stdout.strip()
        return self._service_token

    def hub(self, method, path, body=None, headers=None, timeout=60):
        context = ssl.create_default_context(cafile=self.ca_path)
        connection = http.client.HTTPSConnection("localhost", self.hub_https_port, context=context, timeout=timeout)
        try:
            all_headers = {"Authorization": self.service_token()}
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                all_headers["Content-Type"] = "application/json"
            all_headers.update(headers or {})
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            connection.close()

    def send_c2d(self, body=b"", headers=None):
        reply = self.hub("POST", "/local/devices/{}/messages".format(self.device), body=body, headers=headers)
        assert reply.status == 202, reply
        return reply.json()

    def invoke_method(self, name, payload=None, timeout=30):
        """Calls a direct method in the background; returns a thread whose `.reply` is the hub's answer."""
        def call():
            thread.reply = self.hub(
                "POST", "/twins/{}/methods?api-version={}".format(self.device, API_VERSION),
                body={"methodName": name, "payload": payload, "responseTimeoutInSeconds": timeout}, timeout=timeout + 10)
        thread = threading.Thread(target=call, daemon=True)
        thread.reply = None
        thread.start()
        return thread

    def set_desired(self, properties):
        reply = self.hub(
            "PATCH", "/twins/{}?api-version={}".format(self.device, API_VERSION), body={"properties": {"desired": properties}})
        assert reply.status == 200, reply
        return reply.json()

    def telemetry(self, after=0, timeout=5):
        reply = self.hub("GET", "/local/telemetry?after={}&timeout={}&deviceId={}".format(after, timeout, self.device))
        assert reply.status == 200, reply
        return reply.json()

    def telemetry_cursor(self):
        """The hub's latest telemetry sequence number: what arrives later comes after it."""
        reply = self.hub("GET", "/local/status")
        assert reply.status == 200, reply
        return reply.json()["lastTelemetrySequenceNumber"]


def drain(sidecar):
    """Completes every message in the inbox and drops waiting method requests' answers."""
    while True:
        reply = sidecar.get("/inbox?timeout=0")
        if reply.status != 200:
            break
        sidecar.request("DELETE", "/inbox/" + reply.header("ETag").strip('"'))


def quote(text):
    return urllib.parse.quote(text, safe="")
