"""The sidecar over MQTT-over-WebSockets and through real proxies started here on loopback:
tinyproxy (HTTP CONNECT, with and without basic authentication), Dante (SOCKS4 and SOCKS5) and
microsocks (SOCKS5 with a user name and password). Every case sends telemetry and uploads a blob,
and checks both on the hub side, the transport the hub saw, and the proxy's own log of the
connections it made. Refusing and absent proxies must give an error that names the proxy."""
import os
import shutil
import socket
import subprocess
import time

import pytest

from sidecar_support import Sidecar, free_port

UNPRIVILEGED = ["User nobody", "Group nogroup"] if os.geteuid() == 0 else []


class Proxy:
    """A proxy server process on a loopback port, with its log."""

    def __init__(self, directory, name, command, port):
        # Not skipped when missing: scripts/setup installs tinyproxy, dante-server and microsocks.
        assert shutil.which(command[0]), "{} is not installed: run scripts/setup".format(command[0])
        self.port = port
        self.log_path = os.path.join(directory, name + ".log")
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, cwd=directory)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("{} exited: {}".format(name, self.text()))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("{} did not listen on {}: {}".format(name, port, self.text()))

    def text(self):
        self.log.flush()
        with open(self.log_path, "rb") as log:
            return log.read().decode(errors="replace")

    def saw_connection_to(self, port):
        """Whether the proxy's log shows a connection it made to `port` on this host."""
        text = self.text()
        return any(marker.format(port) in text for marker in (
            "CONNECT localhost:{} ",  # tinyproxy
            "127.0.0.1.{}\n",  # Dante: "... -> 127.0.0.1.<local> 127.0.0.1.<port>"
            "connected to localhost:{}",  # microsocks
        ))

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def tinyproxy(directory, basic_auth=None, connect_port=None):
    port = free_port()
    lines = UNPRIVILEGED + [
        "Port {}".format(port), "Listen 127.0.0.1", "Timeout 60", "LogLevel Connect", "MaxClients 50", "Allow 127.0.0.1",
    ]
    if basic_auth:
        lines.append("BasicAuth {} {}".format(*basic_auth))
    if connect_port:
        # Only this port may be CONNECTed to: everything else is refused with 403.
        lines.append("ConnectPort {}".format(connect_port))
    config = os.path.join(directory, "tinyproxy.conf")
    with open(config, "w") as file:
        file.write("\n".join(lines) + "\n")
    return Proxy(directory, "tinyproxy", ["tinyproxy", "-d", "-c", config], port)


def dante(directory):
    port = free_port()
    config = os.path.join(directory, "danted.conf")
    with open(config, "w") as file:
        file.write("\n".join([
            "logoutput: stderr",
            "internal: 127.0.0.1 port = {}".format(port),
            "external: 127.0.0.1",
            "clientmethod: none",
            "socksmethod: none",
        ] + (["user.privileged: root", "user.unprivileged: nobody"] if os.geteuid() == 0 else []) + [
            "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect }",
            "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect }",
        ]) + "\n")
    return Proxy(directory, "danted", ["danted", "-f", config, "-p", os.path.join(directory, "danted.pid"), "-N", "1"], port)


def microsocks(directory, user, password):
    port = free_port()
    return Proxy(directory, "microsocks", ["microsocks", "-i", "127.0.0.1", "-p", str(port), "-u", user, "-P", password], port)


# (name, start(directory) -> Proxy, proxy URL with {port}, password or None)
PROXIES = [
    ("http", lambda d: tinyproxy(d), "http://127.0.0.1:{port}", None),
    ("http-basic-auth", lambda d: tinyproxy(d, basic_auth=("alice", "s3cret")), "http://alice@127.0.0.1:{port}", "s3cret"),
    ("socks4", lambda d: dante(d), "socks4://127.0.0.1:{port}", None),
    ("socks5", lambda d: dante(d), "socks5://127.0.0.1:{port}", None),
    ("socks5-password", lambda d: microsocks(d, "bob", "pw:with@signs"), "socks5://bob@127.0.0.1:{port}", "pw:with@signs"),
]


def start_sidecar(extra_args, password=None, password_file=None):
    env = {"IOTHUB_PROXY_PASSWORD": password} if password and not password_file else {}
    args = list(extra_args) + (["--proxy-password-file", password_file] if password_file else [])
    return Sidecar(args, env=env).wait_ready()


def send_and_upload(sidecar, label):
    cursor = sidecar.telemetry_cursor()
    reply = sidecar.post("/messages", body=label.encode(), headers={"Content-Type": "text/plain", "iothub-app-via": label})
    assert reply.status == 200, reply
    telemetry = sidecar.telemetry(after=cursor)["messages"]
    assert [m["properties"].get("via") for m in telemetry] == [label]

    content = os.urandom(50_000)
    reply = sidecar.request("PUT", "/blob/{}.bin".format(label), body=content)
    assert reply.status == 201, reply
    blob = sidecar.hub("GET", "/local/blobs/fileuploads/{}/{}.bin".format(sidecar.device, label))
    assert blob.status == 200 and blob.body == content


def transport_seen_by_hub(sidecar):
    connections = sidecar.hub("GET", "/local/status").json()["connections"]
    return next((c["transport"] for c in connections if c["clientId"] == sidecar.device), None)


def test_websockets_without_a_proxy(tmp_path):
    sidecar = start_sidecar(["--websockets"])
    try:
        assert transport_seen_by_hub(sidecar) == "mqtt-websockets"
        send_and_upload(sidecar, "wss")
        assert "transport=mqtt-websockets" in sidecar.output()
        # Every operation class over the tunnel: twin, method, C2D.
        assert sidecar.request("PATCH", "/twin", body=b'{"via":"wss"}', headers={"Content-Type": "application/json"}).status == 200
        sidecar.send_c2d(b"down the websocket", {"iothub-messageid": "c2d-wss"})
        reply = sidecar.get("/inbox?timeout=10")
        assert reply.status == 200 and reply.body == b"down the websocket"
    finally:
        sidecar.stop()


# LocalHub's certificate is an EC one: ECDHE-ECDSA suites meet it, RSA-only ones cannot. The tunnel
# (WebSockets) always offers BoringSSL's three TLS 1.3 suites, so a list allowing TLS 1.3 names all three.
TLS12_THE_HUB_MEETS = "ECDHE-ECDSA-AES128-GCM-SHA256"
TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


@pytest.mark.parametrize("websockets", [False, True], ids=["mqtt", "websockets"])
@pytest.mark.parametrize("cipher", [TLS12_THE_HUB_MEETS + ":" + TLS13_SUITES, TLS12_THE_HUB_MEETS],
                         ids=["tls12-and-tls13", "tls12-only"])
def test_a_cipher_list_the_hub_meets_carries_telemetry_and_file_upload(cipher, websockets):
    sidecar = start_sidecar(["--cipher", cipher] + (["--websockets"] if websockets else []))
    try:
        send_and_upload(sidecar, "cipher")
    finally:
        sidecar.stop()


@pytest.mark.parametrize("websockets", [False, True], ids=["mqtt", "websockets"])
def test_a_cipher_list_the_hub_cannot_meet_fails_every_connection(websockets):
    """IOTHUB_CIPHER (the option's variable) with RSA key exchange alone: the handshake with the
    hub fails, for MQTT and for file upload alike."""
    sidecar = Sidecar(["--websockets"] if websockets else [], env={"IOTHUB_CIPHER": "ECDHE-RSA-AES128-GCM-SHA256"})
    try:
        error = connection_error(sidecar)
        assert error["code"] == "ConnectionFailedError", error
        assert refused_send(sidecar)["code"] == "ConnectionFailedError"
        reply = sidecar.request("PUT", "/blob/x.bin", body=b"x")
        assert reply.status == 503 and reply.json()["code"] == "ConnectionFailedError", reply
    finally:
        sidecar.stop()


@pytest.mark.parametrize("cipher,named", [
    ("TLS_AES_999_GCM_SHA1", "TLS_AES_999_GCM_SHA1"),
    ("NOT-A-CIPHER", "NOT-A-CIPHER"),
])
def test_a_cipher_list_no_connection_could_use_is_refused_at_start(cipher, named):
    result = subprocess.run(
        [os.environ.get("IOTHUB_SIDECAR_BIN", ".build/debug/iothub-sidecar"), "serve", "--local-hub", "--cipher", cipher],
        capture_output=True, timeout=30)
    assert result.returncode != 0
    assert b"cipher" in result.stderr and named.encode() in result.stderr, result.stderr


@pytest.mark.parametrize("websockets", [False, True], ids=["mqtt", "websockets"])
@pytest.mark.parametrize("name,start,url,password", PROXIES, ids=[p[0] for p in PROXIES])
def test_everything_goes_through_the_proxy(tmp_path, name, start, url, password, websockets):
    proxy = start(str(tmp_path))
    password_file = None
    if password and name.startswith("socks5"):
        # One case reads the password from a file, the other from the environment.
        password_file = str(tmp_path / "proxy-password")
        with open(password_file, "w") as file:
            file.write(password + "\n")
    try:
        args = ["--proxy", url.format(port=proxy.port)] + (["--websockets"] if websockets else [])
        sidecar = start_sidecar(args, password=password, password_file=password_file)
        try:
            assert transport_seen_by_hub(sidecar) == ("mqtt-websockets" if websockets else "mqtt")
            status = sidecar.get("/status").json()
            assert status["transport"] == ("mqtt-websockets" if websockets else "mqtt")
            assert status["proxy"] == url.format(port=proxy.port), status
            send_and_upload(sidecar, "{}-{}".format(name, "wss" if websockets else "mqtt"))
            mqtt_port = sidecar.hub_https_port if websockets else sidecar.hub_mqtt_port
            assert proxy.saw_connection_to(mqtt_port), proxy.text()
            assert proxy.saw_connection_to(sidecar.hub_https_port), "file upload's HTTPS went around the proxy:\n" + proxy.text()
            assert proxy.saw_connection_to(sidecar.hub_blob_port), "the blob went around the proxy:\n" + proxy.text()
            if password:
                assert password not in sidecar.output()
        finally:
            sidecar.stop()
    finally:
        proxy.stop()


def connection_error(sidecar):
    """The sidecar's last connection error, once it has one."""
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            error = sidecar.get("/status", timeout=2).json().get("lastError")
        except OSError:
            error = None  # not serving yet
        if error:
            return error
        time.sleep(0.1)
    raise AssertionError("no connection error was reported:\n" + sidecar.output())


def refused_send(sidecar):
    reply = sidecar.post("/messages", body=b"x")
    assert reply.status == 503, reply
    return reply.json()


@pytest.mark.parametrize("websockets", [False, True], ids=["mqtt", "websockets"])
def test_a_proxy_that_refuses_the_hub_is_named(tmp_path, websockets):
    proxy = tinyproxy(str(tmp_path), connect_port=1)
    try:
        sidecar = Sidecar(["--proxy", "http://127.0.0.1:{}".format(proxy.port)] + (["--websockets"] if websockets else []))
        try:
            error = connection_error(sidecar)
            assert error["code"] == "ConnectionFailedError"
            assert "HTTP proxy 127.0.0.1:{}".format(proxy.port) in error["message"]
            assert "403" in error["message"], error
            problem = refused_send(sidecar)
            assert problem["code"] == "ConnectionFailedError" and "HTTP proxy" in problem["detail"], problem
        finally:
            sidecar.stop()
    finally:
        proxy.stop()


def test_a_wrong_proxy_password_is_named(tmp_path):
    proxy = tinyproxy(str(tmp_path), basic_auth=("alice", "s3cret"))
    try:
        sidecar = Sidecar(["--proxy", "http://alice@127.0.0.1:{}".format(proxy.port)], env={"IOTHUB_PROXY_PASSWORD": "wrong"})
        try:
            error = connection_error(sidecar)
            assert error["code"] == "ConnectionFailedError"
            assert "HTTP proxy 127.0.0.1:{} refused the user name and password (40".format(proxy.port) in error["message"], error
        finally:
            sidecar.stop()
    finally:
        proxy.stop()


def test_a_wrong_socks5_password_is_named(tmp_path):
    proxy = microsocks(str(tmp_path), "bob", "right")
    try:
        sidecar = Sidecar(["--proxy", "socks5://bob@127.0.0.1:{}".format(proxy.port), "--websockets"], env={"IOTHUB_PROXY_PASSWORD": "wrong"})
        try:
            error = connection_error(sidecar)
            assert "SOCKS5 proxy 127.0.0.1:{} refused the user name and password".format(proxy.port) in error["message"], error
        finally:
            sidecar.stop()
    finally:
        proxy.stop()


@pytest.mark.parametrize("scheme", ["http", "socks4", "socks5"])
def test_a_proxy_that_is_not_listening_is_named(scheme):
    port = free_port()
    sidecar = Sidecar(["--proxy", "{}://127.0.0.1:{}".format(scheme, port)])
    try:
        error = connection_error(sidecar)
        assert error["code"] == "ConnectionFailedError"
        assert "{} proxy 127.0.0.1:{}".format(scheme.upper(), port) in error["message"], error
        # File upload goes through the same proxy and fails the same way, naming it.
        reply = sidecar.request("PUT", "/blob/x.bin", body=b"x")
        assert reply.status == 503, reply
    finally:
        sidecar.stop()


def test_a_password_on_the_command_line_is_refused():
    result = subprocess.run(
        [os.environ.get("IOTHUB_SIDECAR_BIN", ".build/debug/iothub-sidecar"), "serve", "--local-hub", "--proxy", "http://u:secret@127.0.0.1:3128"],
        capture_output=True, timeout=30)
    assert result.returncode == 1
    assert b"--proxy must not carry a password" in result.stderr
