"""No key, SAS signature, token or proxy password ever reaches standard output, standard error,
a log line (at trace level), a problem document, /status or /events: generated inputs put a
known secret in every position and shape a user could put it, and the test looks for the
secret and for any eight characters of it in a row."""
import base64
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from sidecar_support import BINARY, Sidecar, StandaloneHub, free_port


def new_secret():
    return base64.b64encode(os.urandom(32)).decode()


def reveals(text, secret):
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    core = secret.rstrip("=")
    return any(core[i:i + 8] in text for i in range(len(core) - 7))


def connection_strings(secret):
    token = "SharedAccessSignature sr=h%2Fdevices%2Fd&sig={}&se=1".format(secret)
    return [
        secret, "HostName=h;DeviceId=d;" + secret, "HostName=h;DeviceId=d;SharedAccessKey:" + secret,
        "HostName=h;DeviceId=d;SharedAccessKey " + secret, "HostName=h;DeviceId=d;sharedaccesskey=" + secret,
        "HostName=h;DeviceId=d;{}=x".format(secret), "{};HostName=h;DeviceId=d".format(secret),
        "HostName=h;DeviceId=d;SharedAccessKey={0};SharedAccessKey={0}".format(secret),
        "HostName=h;DeviceId=d;SharedAccessKey={}!".format(secret), "HostName=h;DeviceId=d;SharedAccessKey={0} {0}".format(secret),
        "HostName=h;DeviceId=d;SharedAccessKey={};x509=true".format(secret),
        "HostName=h;DeviceId=d;SharedAccessKey={};SharedAccessSignature={}".format(secret, token),
        "HostName=h;SharedAccessKey=" + secret, "HostName=h;DeviceId=d;SharedAccessSignature=" + secret,
        "HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature sr=a&{}&se=1".format(secret),
        "HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature sr=a&sig={}&se=soon".format(secret),
        "HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature sr=a&sig={0}&{0}=1".format(secret),
        "HostName=h;DeviceId=d;;SharedAccessKey=" + secret,
    ]


def tokens(secret):
    return [
        secret, "SharedAccessSignature " + secret, "SharedAccessSignature sr=a&{}&se=1".format(secret),
        "SharedAccessSignature sr=a&sig=" + secret, "SharedAccessSignature sr=a&sig={}&se=soon".format(secret),
        "SharedAccessSignature sr=a&sig={0}&sig={0}&se=1".format(secret), "SharedAccessSignature sr=a&sig={0}&se=1&{0}=x".format(secret),
        "sr=a&sig={}&se=1".format(secret), "SharedAccessSignature sr=a&sig={}&se=1".format(secret),
        "SharedAccessSignature sr=h%2Fdevices%2Fd&sig={}&se=1".format(secret),
    ]


def proxy_urls(secret):
    return [
        "http://user:{}@proxy.example:3128".format(secret), "http://user@proxy.example:" + secret,
        "{}://proxy.example:3128".format(secret.replace("/", "").replace("+", "")), "http://user:{}@".format(secret),
        "socks4://user:{}@proxy.example:1080".format(secret), "http://:{}@proxy.example:3128".format(secret),
        "http://user:{}@proxy.example:3128/path".format(secret), "proxy.example:3128:" + secret,
    ]


class Answer:
    def __init__(self, body):
        self.body = body

    def __repr__(self):
        return repr(self.body[:500])


def read_events(port, seconds=2):
    """What GET /events sends in its first seconds."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                chunk = sock.recv(4096)
            except OSError:
                break
            if not chunk:
                break
            received += chunk
    return received


def run(arguments, env=None, stdin=None, timeout=30):
    environment = {key: value for key, value in os.environ.items() if not key.startswith("IOTHUB_")}
    environment.update(env or {})
    return subprocess.run([BINARY] + arguments, env=environment, input=stdin, capture_output=True, timeout=timeout)


@pytest.fixture
def scratch():
    directory = tempfile.mkdtemp(prefix="secrets-test-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def write(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as file:
        file.write(text)
    os.chmod(path, 0o600)
    return path


def assert_silent(result, secret, what):
    output = result.stdout + result.stderr
    assert result.returncode != 0, (what, output)
    assert not reveals(output, secret), (what, output)


SERVE = ["serve", "--log-level", "trace", "--listen", "127.0.0.1:0"]


def test_malformed_connection_strings_are_refused_without_repeating_the_key(scratch):
    secret = new_secret()
    for text in connection_strings(secret):
        path = write(scratch, "cs", text)
        assert_silent(run(SERVE, env={"IOTHUB_DEVICE_CONNECTION_STRING": text}), secret, text)
        assert_silent(run(SERVE + ["--connection-string-file", path]), secret, text)
        assert_silent(run(SERVE + ["--connection-string-file", "-"], stdin=text.encode()), secret, text)
        assert_silent(run(["sas-token"], env={"IOTHUB_DEVICE_CONNECTION_STRING": text}), secret, text)
        assert_silent(run(["sas-token", "--connection-string-file", path]), secret, text)


def test_malformed_tokens_and_keys_are_refused_without_repeating_them(scratch):
    secret = new_secret()
    for text in tokens(secret):
        path = write(scratch, "token", text)
        assert_silent(run(SERVE, env={"IOTHUB_DEVICE_SAS_TOKEN": text}), secret, text)
        assert_silent(run(SERVE + ["--sas-token-file", path]), secret, text)
    identity = ["--hostname", "h.example", "--device-id", "d"]
    for key in [secret + "!", secret + " " + secret, secret[:-3], secret.replace("=", "*")]:
        path = write(scratch, "key", key)
        assert_silent(run(SERVE + identity + ["--key-file", path]), secret, key)
        assert_silent(run(SERVE + identity, env={"IOTHUB_DEVICE_KEY": key}), secret, key)


def test_proxy_passwords_are_never_repeated(scratch):
    secret = new_secret()
    identity = {"IOTHUB_DEVICE_CONNECTION_STRING": "HostName=h.example;DeviceId=d;SharedAccessKey=" + base64.b64encode(b"k" * 32).decode()}
    for url in proxy_urls(secret):
        assert_silent(run(SERVE + ["--proxy", url], env=identity), secret, url)
        password_file = write(scratch, "proxy-password", secret)
        result = run(SERVE + ["--proxy", url, "--proxy-password-file", password_file], env=identity)
        assert_silent(result, secret, url)
    # A password with no user name, and for SOCKS4, which has none.
    for url in ["http://proxy.example:3128", "socks4://user@proxy.example:1080"]:
        assert_silent(run(SERVE + ["--proxy", url], env=dict(identity, IOTHUB_PROXY_PASSWORD=secret)), secret, url)


def test_a_running_sidecar_never_shows_its_key_or_token():
    hub = StandaloneHub("secret-device")
    key = hub.connection_string.split("SharedAccessKey=", 1)[1]
    port = free_port()
    log = tempfile.TemporaryFile()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IOTHUB_")}
    environment["IOTHUB_SIDECAR_STATE_DIR"] = os.path.join(hub.data_dir, "sidecar-state")
    environment["IOTHUB_DEVICE_CONNECTION_STRING"] = hub.connection_string
    sidecar = subprocess.Popen(
        [BINARY, "serve", "--log-level", "trace", "--listen", "127.0.0.1:{}".format(port), "--server-verification-cert",
         os.path.join(hub.data_dir, "ca.pem"), "--mqtt-port", str(hub.mqtt_port), "--https-port", str(hub.https_port)],
        env=environment, stdout=log, stderr=subprocess.STDOUT)
    helper = Sidecar.__new__(Sidecar)
    helper.listen = "127.0.0.1:{}".format(port)
    answers = []
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if helper.get("/readyz").status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        answers.append(helper.post("/messages", body=b"hello", headers={"iothub-app-x": "y"}))
        answers.append(helper.get("/twin"))
        answers.append(helper.post("/blob/sas", body={"blobName": "a.txt"}))
        answers.append(helper.get("/status"))
        answers.append(helper.request("PUT", "/sastoken", body=b"SharedAccessSignature sr=a&sig=" + key.encode() + b"&se=1",
                                      headers={"Content-Type": "text/plain"}))
        answers.append(helper.post("/disconnect"))
        answers.append(helper.post("/connect"))
        answers.append(helper.get("/metrics"))
    finally:
        sidecar.terminate()
        sidecar.wait(30)
        hub.stop()
    log.seek(0)
    output = log.read()
    assert b"connected to the hub" in output or b"connection state changed" in output, output[-2000:]
    assert not reveals(output, key), output
    for answer in answers:
        assert not reveals(answer.body, key), answer


def test_a_refused_token_is_not_shown_in_status_events_or_logs():
    hub = StandaloneHub("token-secret-device")
    forged = "SharedAccessSignature sr={}&sig={}&se={}".format(
        hub.connection_string.split("HostName=", 1)[1].split(";", 1)[0] + "%2Fdevices%2Ftoken-secret-device",
        base64.b64encode(os.urandom(32)).decode().replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"), int(time.time()) + 3600)
    signature = forged.split("sig=", 1)[1].split("&", 1)[0]
    port = free_port()
    log = tempfile.TemporaryFile()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IOTHUB_")}
    environment["IOTHUB_SIDECAR_STATE_DIR"] = os.path.join(hub.data_dir, "sidecar-state")
    environment["IOTHUB_DEVICE_SAS_TOKEN"] = forged
    sidecar = subprocess.Popen(
        [BINARY, "serve", "--log-level", "trace", "--listen", "127.0.0.1:{}".format(port), "--server-verification-cert",
         os.path.join(hub.data_dir, "ca.pem"), "--mqtt-port", str(hub.mqtt_port), "--https-port", str(hub.https_port)],
        env=environment, stdout=log, stderr=subprocess.STDOUT)
    helper = Sidecar.__new__(Sidecar)
    helper.listen = "127.0.0.1:{}".format(port)
    answers = []
    try:
        deadline = time.time() + 30
        status = None
        while time.time() < deadline:
            try:
                status = helper.get("/status")
                if status.json().get("lastError"):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        answers.append(status)
        answers.append(helper.get("/readyz"))
        answers.append(helper.post("/connect"))
        answers.append(Answer(read_events(port)))
    finally:
        sidecar.terminate()
        sidecar.wait(30)
        hub.stop()
    log.seek(0)
    output = log.read()
    assert status is not None and status.json().get("lastError"), status
    for text in (signature, signature.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=")):
        assert not reveals(output, text), output
        for answer in answers:
            assert not reveals(answer.body, text), answer.body
