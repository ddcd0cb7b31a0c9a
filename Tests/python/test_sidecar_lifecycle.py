"""The sidecar as a process: API token, unix socket, auto-connect off, a SAS-token identity whose
token is replaced, graceful shutdown with requests in flight, and startup failures."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from sidecar_support import BINARY, Reply, Sidecar, StandaloneHub, free_port


def problem_code(reply):
    assert reply.header("Content-Type") == "application/problem+json", reply
    return reply.json()["code"]


def test_api_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    sidecar = Sidecar(extra_args=["--api-token-file", str(token_file)]).wait_ready()
    try:
        assert sidecar.get("/healthz").status == 200
        assert sidecar.get("/readyz").status == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer s3cret-toke"},
                        {"Authorization": "Basic s3cret-token"}, {"Authorization": "Bearer s3cret-token-and-more"}):
            reply = sidecar.get("/status", headers=headers)
            assert reply.status == 401, (headers, reply)
            assert problem_code(reply) == "Unauthorized"
            assert reply.header("WWW-Authenticate").startswith("Bearer")
        assert sidecar.get("/status", headers={"Authorization": "Bearer s3cret-token"}).status == 200
        assert sidecar.get("/status", headers={"Authorization": "bearer s3cret-token"}).status == 200
        assert sidecar.post("/messages", body=b"x", headers={"Authorization": "Bearer s3cret-token"}).status == 200
        assert b"s3cret-token" not in sidecar.output().encode()
    finally:
        assert sidecar.stop() == 0


def test_unix_socket_listener():
    directory = tempfile.mkdtemp(prefix="sidecar-sock-")
    path = os.path.join(directory, "sidecar.sock")
    sidecar = Sidecar(listen="unix:" + path).wait_ready()
    try:
        assert sidecar.get("/status").json()["state"] == "connected"
        assert sidecar.post("/messages", body=b"over a unix socket").status == 200
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", sidecar.port), timeout=1)
    finally:
        assert sidecar.stop() == 0


def test_auto_connect_off():
    sidecar = Sidecar(extra_args=["--auto-connect", "false"]).wait_ready()
    try:
        assert sidecar.post("/disconnect").status == 204
        for reply in (sidecar.get("/inbox?timeout=1"), sidecar.get("/methods?timeout=1"), sidecar.post("/messages", body=b"x")):
            assert reply.status == 503, reply
            assert problem_code(reply) == "NoConnectionError"
        assert sidecar.post("/connect").status == 204
        assert sidecar.post("/messages", body=b"x").status == 200
    finally:
        assert sidecar.stop() == 0


def test_graceful_shutdown_answers_polls_and_finishes_sends():
    sidecar = Sidecar(extra_args=["--shutdown-timeout", "10"]).wait_ready()
    cursor = sidecar.telemetry_cursor()
    assert sidecar.hub("PUT", "/local/faults", body={"acknowledgementDelayMilliseconds": 1500}).status == 200
    answers = {}

    def poll():
        answers["poll"] = sidecar.get("/inbox?timeout=50")

    def send():
        answers["send"] = sidecar.post("/messages", body=b"in flight", headers={"iothub-messageid": "in-flight"})

    threads = [threading.Thread(target=poll), threading.Thread(target=send)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    started = time.time()
    sidecar.process.send_signal(signal.SIGTERM)
    threads[0].join(10)
    assert answers["poll"].status == 204
    assert time.time() - started < 5
    threads[1].join(15)
    assert answers["send"].status == 200, answers["send"]
    assert sidecar.process.wait(20) == 0, sidecar.output()
    assert time.time() - started < 15
    # New connections are refused once the sidecar has stopped.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sidecar.port), timeout=1)
    log = sidecar.output()
    assert "disconnecting from the hub" in log


def run_briefly(args, env=None):
    environment = dict(os.environ)
    environment.pop("IOTHUB_DEVICE_CONNECTION_STRING", None)
    environment.update(env or {})
    return subprocess.run([BINARY] + args, capture_output=True, text=True, timeout=60, env=environment)


@pytest.mark.parametrize("args, env, message", [
    (["serve"], {}, "no credentials"),
    (["serve", "--connection-string-file", "/nonexistent/cs"], {}, "cannot read the connection string"),
    (["serve"], {"IOTHUB_DEVICE_CONNECTION_STRING": "HostName=h;DeviceId=d"}, "ValueError"),
    (["serve"], {"IOTHUB_DEVICE_CONNECTION_STRING": "HostName=;DeviceId=d;SharedAccessKey=c2VjcmV0LWtleQ=="}, "ValueError"),
    (["serve", "--listen", "nonsense"], {"IOTHUB_DEVICE_CONNECTION_STRING": "x"}, "--listen"),
    (["serve", "--local-hub", "--keep-alive", "0"], {}, "keep_alive"),
    (["serve", "--local-hub"], {"IOTHUB_AUTO_CONNECT": "maybe"}, "IOTHUB_AUTO_CONNECT"),
    (["serve", "--local-hub", "--request-body-timeout", "0"], {}, "--request-body-timeout"),
    (["serve", "--local-hub", "--request-body-timeout", "61"], {}, "--request-body-timeout"),
    (["serve", "--local-hub"], {"IOTHUB_SIDECAR_REQUEST_BODY_TIMEOUT": "soon"}, "IOTHUB_SIDECAR_REQUEST_BODY_TIMEOUT"),
])
def test_startup_failures_exit_with_one_line(args, env, message):
    run = run_briefly(args, env)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], run.stderr
    assert "c2VjcmV0LWtleQ" not in run.stderr  # a key is never printed


def test_port_in_use_fails_at_startup():
    """The first (and only) line says which port is busy, that another sidecar probably holds
    it, and which flag moves it: not what the half-started rest logged, nor NIO's names."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sidecar = Sidecar(listen="127.0.0.1:{}".format(port))
        assert sidecar.process.wait(30) == 1
        lines = sidecar.output().strip().splitlines()
        sidecar.stop()
    assert len(lines) == 1, lines
    assert lines[0].startswith("iothub-sidecar: the sidecar cannot listen on 127.0.0.1:{}: the port is in use, probably by another iothub-sidecar".format(port)), lines
    assert "--listen" in lines[0] and "bind(" not in lines[0] and ")" not in lines[0].split("(scripts/run?)")[1].replace("(IOTHUB_SIDECAR_LISTEN)", ""), lines


@pytest.mark.parametrize("flag, what", [("--local-hub-mqtt-port", "MQTT"), ("--local-hub-https-port", "HTTPS"), ("--local-hub-blob-port", "blob storage")])
def test_a_busy_local_hub_port_names_its_flag(flag, what, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = {"--local-hub-mqtt-port": "0", "--local-hub-https-port": "0", "--local-hub-blob-port": "0", flag: str(port)}
        arguments = ["serve", "--local-hub", "--local-hub-data-dir", str(tmp_path), "--listen", "127.0.0.1:0"]
        run = run_briefly(arguments + [item for pair in ports.items() for item in pair])
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1, run.stderr
    assert "the local hub's {} cannot listen on 127.0.0.1:{}: the port is in use".format(what, port) in lines[0], lines
    assert flag in lines[0] and "bind(" not in lines[0], lines


def test_a_busy_port_of_the_hub_command_names_its_flag(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = run_briefly(["hub", "--data-dir", str(tmp_path), "--mqtt-port", str(port), "--https-port", "0", "--blob-port", "0"])
    assert run.returncode == 1
    assert "the local hub's MQTT cannot listen on 127.0.0.1:{}: the port is in use".format(port) in run.stderr, run.stderr
    assert "--mqtt-port" in run.stderr and "bind(" not in run.stderr


def test_connection_string_file_errors_say_what_is_wrong(tmp_path):
    missing = tmp_path / "missing"
    run = run_briefly(["serve", "--connection-string-file", str(missing)])
    assert "cannot read the connection string from {}: there is no such file".format(missing) in run.stderr, run.stderr
    run = run_briefly(["serve", "--connection-string-file", str(tmp_path)])
    assert "cannot read the connection string from {}: it is a directory, not a file".format(tmp_path) in run.stderr, run.stderr
    secret = tmp_path / "connection-string"
    secret.write_text("HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0LWtleQ==")
    secret.chmod(0o600)
    tmp_path.chmod(0o755)
    if os.geteuid() == 0:
        # Root reads anything: read as another user, as a container's uid 10001 would.
        command = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", BINARY]
    else:
        secret.chmod(0o000)
        command = [BINARY]
    run = subprocess.run(command + ["serve", "--connection-string-file", str(secret)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "cannot read the connection string from {}: permission denied".format(secret) in run.stderr, run.stderr
    assert "c2VjcmV0LWtleQ" not in run.stderr


def test_help_explains_every_option():
    run = run_briefly(["serve", "--help"])
    assert run.returncode == 0
    for option in ["--listen", "--api-token-file", "--request-body-timeout", "IOTHUB_SIDECAR_REQUEST_BODY_TIMEOUT",
                   "--connection-string-file", "--sas-token-file", "--key-file",
                   "--x509-cert-file", "--server-verification-cert", "--gateway-hostname", "--cipher", "--product-info", "--model-id", "IOTHUB_MODEL_ID",
                   "--sastoken-ttl", "--keep-alive", "--auto-connect", "--connection-retry", "--connection-retry-interval",
                   "--local-hub", "--local-hub-data-dir", "IOTHUB_DEVICE_CONNECTION_STRING", "--allow-unauthenticated",
                   "IOTHUB_SIDECAR_ALLOW_UNAUTHENTICATED", "--state-dir", "IOTHUB_SIDECAR_STATE_DIR", "--telemetry-delivery",
                   "IOTHUB_SIDECAR_TELEMETRY_DELIVERY", "--outbox-max-bytes", "--outbox-when-full", "--outbox-ttl",
                   "--outbox-drain-rate", "IOTHUB_SIDECAR_OUTBOX_DRAIN_RATE", "--server-verification-cert-adds-to-system-store",
                   "IOTHUB_SERVER_VERIFICATION_CERT_ADDS_TO_SYSTEM_STORE", "--ensure-desired-properties", "IOTHUB_ENSURE_DESIRED_PROPERTIES",
                   "--edge-environment", "IOTHUB_EDGE_ENVIRONMENT", "IOTEDGE_WORKLOADURI"]:
        assert option in run.stdout, option


def test_sas_token_identity_asks_for_and_takes_a_new_token():
    hub = StandaloneHub("token-device")
    try:
        def token(ttl):
            return run_briefly(["sas-token", "--ttl", str(ttl)], {"IOTHUB_DEVICE_CONNECTION_STRING": hub.connection_string}).stdout.strip()

        sidecar_env = {"IOTHUB_DEVICE_SAS_TOKEN": token(125)}
        port = free_port()
        sidecar = subprocess.Popen(
            [BINARY, "serve", "--listen", "127.0.0.1:{}".format(port), "--server-verification-cert", os.path.join(hub.data_dir, "ca.pem"),
             "--mqtt-port", str(hub.mqtt_port), "--https-port", str(hub.https_port)],
            env=dict(os.environ, IOTHUB_SIDECAR_STATE_DIR=os.path.join(hub.data_dir, "sidecar-state"), **sidecar_env),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            helper = Sidecar.__new__(Sidecar)
            helper.listen = "127.0.0.1:{}".format(port)
            deadline = time.time() + 30
            status = None
            while time.time() < deadline:
                try:
                    status = helper.get("/status").json()
                    if status["newSasTokenRequired"]:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            assert status and status["identity"]["authentication"] == "sasToken"
            assert status["newSasTokenRequired"] is True
            bad = helper.request("PUT", "/sastoken", body=b"SharedAccessSignature sr=elsewhere&sig=x&se=1", headers={"Content-Type": "text/plain"})
            assert bad.status == 400 and problem_code(bad) == "ValueError"
            fresh = token(3600)
            reply = helper.request("PUT", "/sastoken", body=fresh.encode(), headers={"Content-Type": "text/plain"})
            assert reply.status == 204, reply
            status = helper.get("/status").json()
            assert status["newSasTokenRequired"] is False
            deadline = time.time() + 20
            while helper.get("/readyz").status != 200 and time.time() < deadline:
                time.sleep(0.2)
            assert helper.post("/messages", body=b"with the new token").status == 200
        finally:
            sidecar.send_signal(signal.SIGTERM)
            assert sidecar.wait(30) == 0
            log = sidecar.stderr.read()
            assert "sig=" not in log, log
    finally:
        hub.stop()


def hub_request(hub, method, path, body=None):
    import http.client
    import json as json_module
    import ssl
    token = run_briefly(["sas-token", "--connection-string-file", os.path.join(hub.data_dir, "service-connection-string")]).stdout.strip()
    context = ssl.create_default_context(cafile=os.path.join(hub.data_dir, "ca.pem"))
    connection = http.client.HTTPSConnection("localhost", hub.https_port, context=context, timeout=30)
    headers = {"Authorization": token}
    if isinstance(body, dict):
        body = json_module.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return Reply(response.status, response.headers, response.read())


def test_module_identity():
    hub = StandaloneHub("module-device")
    try:
        created = hub_request(hub, "PUT", "/devices/module-device/modules/filter?api-version=2021-04-12",
                              {"deviceId": "module-device", "moduleId": "filter"})
        assert created.status == 200, created
        key = created.json()["authentication"]["symmetricKey"]["primaryKey"]
        port = free_port()
        environment = dict(os.environ, IOTHUB_DEVICE_CONNECTION_STRING="HostName=localhost;DeviceId=module-device;ModuleId=filter;SharedAccessKey=" + key,
                           IOTHUB_SIDECAR_STATE_DIR=os.path.join(hub.data_dir, "sidecar-state"))
        sidecar = subprocess.Popen(
            [BINARY, "serve", "--listen", "127.0.0.1:{}".format(port), "--server-verification-cert", os.path.join(hub.data_dir, "ca.pem"),
             "--mqtt-port", str(hub.mqtt_port), "--https-port", str(hub.https_port)],
            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        helper = Sidecar.__new__(Sidecar)
        helper.listen = "127.0.0.1:{}".format(port)
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    if helper.get("/readyz").status == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            status = helper.get("/status").json()
            assert status["identity"]["moduleId"] == "filter"
            assert helper.post("/messages", body=b"to output", headers={"iothub-outputname": "alerts"}).status == 200
            page = hub_request(hub, "GET", "/local/telemetry?after=0&timeout=5&deviceId=module-device").json()
            assert page["messages"][-1]["outputName"] == "alerts" and page["messages"][-1]["moduleId"] == "filter"
            # Module inputs arrive in the inbox, with the input's name.
            deadline = time.time() + 10
            while True:
                sent = hub_request(hub, "POST", "/local/devices/module-device/modules/filter/inputs/input1/messages", b"to input")
                if sent.status == 202 or time.time() > deadline:
                    break
                time.sleep(0.2)  # the module's subscription to its inputs may still be on its way
            assert sent.status == 202, sent
            message = helper.get("/inbox?timeout=10")
            assert message.status == 200 and message.body == b"to input"
            assert message.header("iothub-inputname") == "input1"
            for reply in (helper.post("/blob/sas", body={"blobName": "x"}), helper.request("PUT", "/blob/x", body=b"x")):
                assert reply.status == 409 and problem_code(reply) == "ClientError"
        finally:
            sidecar.send_signal(signal.SIGTERM)
            assert sidecar.wait(30) == 0
    finally:
        hub.stop()


def start_briefly(args, env=None, timeout=15):
    """Starts `iothub-sidecar` with a local hub on free ports; returns (exit status or None if it
    is still running after `timeout` seconds, its standard error). A running process is stopped."""
    data_dir = tempfile.mkdtemp(prefix="sidecar-listen-")
    environment = dict(os.environ)
    environment.pop("IOTHUB_DEVICE_CONNECTION_STRING", None)
    environment.update(env or {})
    command = [BINARY, "serve", "--local-hub", "--local-hub-data-dir", data_dir, "--local-hub-mqtt-port", str(free_port()),
               "--local-hub-https-port", str(free_port()), "--local-hub-blob-port", str(free_port())] + args
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment)
    try:
        _, stderr = process.communicate(timeout=timeout)
        return process.returncode, stderr.decode()
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        return None, stderr.decode()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.parametrize("listen, env", [
    ("0.0.0.0:0", {}), ("[::]:0", {}), ("192.0.2.10:0", {}), ("sidecar.example:0", {}), ("[::ffff:192.0.2.10]:0", {}),
    (None, {"IOTHUB_SIDECAR_LISTEN": "0.0.0.0:0"}),
    ("0.0.0.0:0", {"IOTHUB_SIDECAR_ALLOW_UNAUTHENTICATED": "false"}),
])
def test_serving_beyond_loopback_without_a_token_is_refused(listen, env):
    status, stderr = start_briefly(["--listen", listen] if listen else [], env)
    assert status == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "--api-token-file" in lines[0] and "--allow-unauthenticated" in lines[0], stderr
    assert "IOTHUB_SIDECAR_ALLOW_UNAUTHENTICATED" in lines[0], stderr


@pytest.mark.parametrize("how", ["token", "flag", "variable"])
def test_serving_beyond_loopback_with_a_token_or_the_flag_starts(tmp_path, how):
    extra, env = [], {}
    if how == "token":
        token_file = tmp_path / "token"
        token_file.write_text("wide-token\n")
        extra = ["--api-token-file", str(token_file)]
    elif how == "flag":
        extra = ["--allow-unauthenticated"]
    else:
        env = {"IOTHUB_SIDECAR_ALLOW_UNAUTHENTICATED": "true"}
    sidecar = Sidecar(listen="0.0.0.0:{}".format(free_port()), extra_args=extra, env=env)
    try:
        sidecar.wait_ready()
        assert sidecar.get("/healthz").status == 200
    finally:
        status = sidecar.stop()
        shutil.rmtree(sidecar.data_dir, ignore_errors=True)
        assert status == 0


def test_loopback_and_unix_sockets_need_no_token(tmp_path):
    for listen in ["127.0.0.2:{}".format(free_port()), "localhost:{}".format(free_port()), "unix:" + str(tmp_path / "s.sock")]:
        status, stderr = start_briefly(["--listen", listen], timeout=3)
        assert status is None, (listen, stderr)  # still running: it started


def metric(sidecar, name):
    found = re.search(r"^{} (\d+)$".format(re.escape(name)), sidecar.get("/metrics").body.decode(), re.M)
    assert found, name
    return int(found.group(1))


def drop_and_wait_for_reconnection(sidecar, timeout=30):
    """Drops the sidecar's MQTT connection at the hub and waits until it is connected again."""
    lost_before = metric_with_label(sidecar, "iothub_sidecar_connection_state_changes_total", 'state="reconnecting"')
    assert sidecar.hub("POST", "/local/devices/{}/disconnect".format(sidecar.device)).status in (200, 202, 204)
    deadline = time.time() + timeout
    while metric_with_label(sidecar, "iothub_sidecar_connection_state_changes_total", 'state="reconnecting"') == lost_before:
        assert time.time() < deadline, "the drop was not noticed"
        time.sleep(0.05)
    while sidecar.get("/status").json()["state"] != "connected":
        assert time.time() < deadline, "no reconnection within {} s".format(timeout)
        time.sleep(0.05)


def metric_with_label(sidecar, name, label):
    found = re.search(r"^{}\{{{}\}} (\d+)$".format(re.escape(name), re.escape(label)), sidecar.get("/metrics").body.decode(), re.M)
    return int(found.group(1)) if found else 0


def test_reconnections_and_reconnection_attempts_are_counted_apart():
    sidecar = Sidecar().wait_ready()
    try:
        assert metric(sidecar, "iothub_sidecar_reconnects_total") == 0
        assert metric(sidecar, "iothub_sidecar_reconnect_attempts_total") == 0
        for count in range(1, 4):
            drop_and_wait_for_reconnection(sidecar)
            assert metric(sidecar, "iothub_sidecar_reconnects_total") == count
            assert metric(sidecar, "iothub_sidecar_reconnect_attempts_total") >= count
        # The hub refuses connections for a while: several attempts, one reconnection.
        attempts_before = metric(sidecar, "iothub_sidecar_reconnect_attempts_total")
        assert sidecar.hub("PUT", "/local/faults", body={"refuseConnectionsSeconds": 3}).status == 200
        drop_and_wait_for_reconnection(sidecar)
        assert metric(sidecar, "iothub_sidecar_reconnects_total") == 4
        assert metric(sidecar, "iothub_sidecar_reconnect_attempts_total") >= attempts_before + 2
        assert metric(sidecar, "iothub_sidecar_reconnect_attempts_total") > metric(sidecar, "iothub_sidecar_reconnects_total")
        text = sidecar.get("/metrics").body.decode()
        assert "# TYPE iothub_sidecar_reconnect_attempts_total counter" in text
    finally:
        sidecar.hub("DELETE", "/local/faults")
        status = sidecar.stop()
        shutil.rmtree(sidecar.data_dir, ignore_errors=True)
        assert status == 0


def test_a_connect_failure_is_logged_once(tmp_path):
    """The connect at start and the listeners (inbox, methods, desired properties) wait on the
    same connection attempt: its failure is one line, not one per waiter."""
    environment = dict(os.environ, IOTHUB_DEVICE_CONNECTION_STRING="HostName=127.0.0.1;DeviceId=d;SharedAccessKey=c2VjcmV0LWtleQ==")
    closed = free_port()
    process = subprocess.Popen([BINARY, "serve", "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"), "--mqtt-port", str(closed),
                                "--connection-retry-interval", "2"], stderr=subprocess.PIPE, text=True, env=environment)
    reports = []
    try:
        for line in process.stderr:
            if "Connection refused" in line and ("could not connect" in line or "background error" in line):
                reports.append(line)
            if "could not connect" in line and len(reports) >= 2:
                break
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    # Two attempts, two seconds apart: one line each.
    assert len(reports) == 2, reports
    assert all("could not connect to the hub" in line for line in reports), reports


# -- the local hub as a child process (iothub-localhub)

def children_of(pid):
    """Process ids whose parent is `pid`, with their command lines."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(entry)) as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                with open("/proc/{}/cmdline".format(entry), "rb") as cmdline:
                    children[int(entry)] = cmdline.read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
    return children


def local_hub_of(sidecar):
    hubs = [pid for pid, cmdline in children_of(sidecar.process.pid).items()
            if os.path.basename(cmdline[0]) == b"iothub-localhub"]
    assert len(hubs) == 1, children_of(sidecar.process.pid)
    return hubs[0]


def is_gone(pid, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open("/proc/{}/stat".format(pid)) as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_the_local_hub_is_a_program_of_its_own_that_never_outlives_the_sidecar():
    sidecar = Sidecar().wait_ready()
    hub = local_hub_of(sidecar)
    # Its own process group: a terminal's Ctrl-C reaches the sidecar, which stops the hub last.
    assert os.getpgid(hub) != os.getpgid(sidecar.process.pid)
    assert sidecar.post("/messages", body=b"through the child hub").status == 200
    sidecar.process.kill()
    sidecar.process.wait(30)
    assert is_gone(hub), "the local hub outlived the sidecar's kill -9"
    # At once: a sidecar started right away gets the same ports for its hub.
    port = free_port()
    again = subprocess.Popen(
        [BINARY, "serve", "--local-hub", "--local-hub-data-dir", sidecar.data_dir,
         "--local-hub-mqtt-port", str(sidecar.hub_mqtt_port), "--local-hub-https-port", str(sidecar.hub_https_port),
         "--local-hub-blob-port", str(sidecar.hub_blob_port), "--listen", "127.0.0.1:{}".format(port),
         "--state-dir", sidecar.state_dir], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready = None
        deadline = time.time() + 30
        while time.time() < deadline and ready != 200:
            assert again.poll() is None, again.stderr.read()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/readyz")
                ready = connection.getresponse().status
                connection.close()
            except OSError:
                time.sleep(0.1)
        assert ready == 200
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(60) == 0, again.stderr.read()


def test_sigterm_stops_the_sidecar_and_then_its_local_hub():
    sidecar = Sidecar().wait_ready()
    hub = local_hub_of(sidecar)
    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(60) == 0, sidecar.output()
    assert is_gone(hub)


def test_the_sidecar_ends_with_an_error_when_its_local_hub_ends():
    sidecar = Sidecar().wait_ready()
    try:
        os.kill(local_hub_of(sidecar), signal.SIGKILL)
        assert sidecar.process.wait(60) != 0
        assert "the local hub ended (signal 9)" in sidecar.output(), sidecar.output()
    finally:
        if sidecar.process.poll() is None:
            sidecar.process.kill()


def test_local_hub_needs_its_program_next_to_the_sidecar(tmp_path):
    alone = tmp_path / "iothub-sidecar"
    shutil.copy(BINARY, alone)
    env = dict(os.environ, PATH="/usr/bin:/bin")
    run = subprocess.run([str(alone), "serve", "--local-hub", "--local-hub-data-dir", str(tmp_path / "hub"),
                          "--local-hub-mqtt-port", "0", "--local-hub-https-port", "0", "--local-hub-blob-port", "0",
                          "--listen", "127.0.0.1:{}".format(free_port())], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "iothub-localhub is not installed next to iothub-sidecar or on PATH" in run.stderr, run.stderr
    run = subprocess.run([str(alone), "hub", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 1 and "iothub-localhub is not installed" in run.stderr, run.stderr


def test_the_hub_command_is_iothub_localhub():
    run = subprocess.run([BINARY, "hub", "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "iothub-localhub" in run.stdout and "--telemetry-bytes" in run.stdout, run.stdout
