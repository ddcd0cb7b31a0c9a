"""`--server-verification-cert` replaces the system's CAs, as the Python SDK's
`server_verification_cert` does; `--server-verification-cert-adds-to-system-store` trusts both.
The system's CAs are moved for the sidecar's process with SSL_CERT_FILE and SSL_CERT_DIR (which
OpenSSL reads for its default locations): here the "system" trusts only the hub's CA. Every TLS
stack is checked: MQTT over TLS (libmosquitto), the WebSocket tunnel (NIOSSL, verified with
the same store) and file upload (libcurl)."""
import os
import subprocess
import time

import pytest

from sidecar_support import Sidecar, StandaloneHub


@pytest.fixture(scope="module")
def hub():
    instance = StandaloneHub("trust-device")
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def system(tmp_path_factory, hub):
    """An environment whose system CAs are the hub's CA alone, and a CA file that is not it."""
    directory = tmp_path_factory.mktemp("trust")
    other = directory / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(directory / "other-ca.key"), "-out", str(other), "-days", "2", "-subj", "/CN=another CA"],
        check=True, capture_output=True, timeout=30)
    empty = directory / "no-certificates"
    empty.mkdir()
    environment = {"SSL_CERT_FILE": os.path.join(hub.data_dir, "ca.pem"), "SSL_CERT_DIR": str(empty)}
    return environment, str(other)


def wait_for_error(sidecar, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            status = sidecar.get("/status", timeout=2).json()
        except OSError:
            status = {}  # not listening yet
        if status.get("lastError"):
            return status
        time.sleep(0.2)
    raise AssertionError("no connection error: {}\n{}".format(sidecar.get("/status").json(), sidecar.output()))


# (name, use the other CA file, add the system's CAs, trusted)
CASES = [
    ("another-ca-replaces-the-system", True, False, False),
    ("another-ca-added-to-the-system", True, True, True),
    ("no-ca-file-means-the-system", False, False, True),
]


@pytest.mark.parametrize("transport", ["mqtt", "websockets"])
@pytest.mark.parametrize("name, other_ca, adds, trusted", CASES, ids=[case[0] for case in CASES])
def test_which_cas_are_trusted(hub, system, transport, name, other_ca, adds, trusted):
    environment, other_file = system
    args = ["--websockets"] if transport == "websockets" else []
    if adds:
        args.append("--server-verification-cert-adds-to-system-store")
    sidecar = Sidecar(args, env=environment, device=hub.device, hub=hub, ca_file=other_file if other_ca else False)
    try:
        if trusted:
            sidecar.wait_ready()
            assert sidecar.post("/messages", body=b"trusted " + name.encode()).status == 200
            upload = sidecar.request("PUT", "/blob/trust-{}-{}.txt".format(name, transport), body=b"through libcurl")
            assert upload.status in (200, 201), upload
        else:
            status = wait_for_error(sidecar)
            assert status["state"] != "connected"
            assert "unable to get local issuer certificate" in status["lastError"]["message"], status
            assert sidecar.get("/readyz").status == 503
            # File upload (libcurl) refuses the hub's certificate as well.
            sas = sidecar.post("/blob/sas", body={"blobName": "refused.txt"})
            assert sas.status == 503 and sas.json()["code"] == "ConnectionFailedError", sas
            assert "certificate" in sas.json()["detail"], sas
    finally:
        assert sidecar.stop() == 0, sidecar.output()


def test_the_environment_variable_twin_of_the_option(hub, system):
    environment, other_file = system
    sidecar = Sidecar(env=dict(environment, IOTHUB_SERVER_VERIFICATION_CERT_ADDS_TO_SYSTEM_STORE="true"),
                      device=hub.device, hub=hub, ca_file=other_file)
    try:
        sidecar.wait_ready()
    finally:
        assert sidecar.stop() == 0, sidecar.output()
