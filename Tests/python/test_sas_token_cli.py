"""`iothub-sidecar sas-token` prints exactly the token Microsoft's Python SDK and Python's
standard library compute for the same identity and expiry."""
import base64
import hashlib
import hmac
import os
import secrets
import subprocess
import time
import urllib.parse

import pytest
from azure.iot.device.common.auth import sastoken as sdk_sastoken
from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism

BINARY = os.environ.get("IOTHUB_SIDECAR_BIN", ".build/debug/iothub-sidecar")
EXPIRY = 1_900_000_000


def stdlib_token(uri, key, expiry, key_name=None):
    encoded = urllib.parse.quote(uri, safe="")
    mac = hmac.new(base64.b64decode(key), (encoded + "\n" + str(expiry)).encode(), hashlib.sha256)
    sig = urllib.parse.quote(base64.b64encode(mac.digest()).decode(), safe="")
    token = "SharedAccessSignature sr={}&sig={}&se={}".format(encoded, sig, expiry)
    return token + ("&skn=" + key_name if key_name else "")


def sdk_token(uri, key, expiry, key_name, monkeypatch):
    # The SDK's renewable token expires at time.time() + ttl; pin the clock to get `expiry`.
    monkeypatch.setattr(sdk_sastoken.time, "time", lambda: expiry - 3600)
    return str(sdk_sastoken.RenewableSasToken(uri, SymmetricKeySigningMechanism(key), key_name, 3600))


def run_cli(connection_string, *arguments):
    environment = {"PATH": os.environ["PATH"], "IOTHUB_DEVICE_CONNECTION_STRING": connection_string}
    return subprocess.run([BINARY, "sas-token", *arguments], env=environment,
                          capture_output=True, text=True, timeout=30)


IDENTITIES = [
    ("device", "myhub.azure-devices.net", "device-1", None),
    ("module", "myhub.azure-devices.net", "device-1", "filter"),
    ("upper-case host", "MyHub.Azure-Devices.net", "Dev.42", None),
    ("punctuation", "myhub.azure-devices.net", "d-_.:@!$'()*,=+%", "m#1"),
]


@pytest.mark.parametrize("name,host,device,module", IDENTITIES, ids=[i[0] for i in IDENTITIES])
@pytest.mark.parametrize("key_bytes", [16, 32, 64])
def test_device_and_module_tokens_match_python(name, host, device, module, key_bytes, monkeypatch):
    key = base64.b64encode(secrets.token_bytes(key_bytes)).decode()
    parts = ["HostName=" + host, "DeviceId=" + device]
    uri = host + "/devices/" + device
    if module:
        parts.append("ModuleId=" + module)
        uri += "/modules/" + module
    parts.append("SharedAccessKey=" + key)
    result = run_cli(";".join(parts), "--expiry", str(EXPIRY))
    assert result.returncode == 0, result.stderr
    expected = stdlib_token(uri, key, EXPIRY)
    assert expected == sdk_token(uri, key, EXPIRY, None, monkeypatch)
    assert result.stdout == expected + "\n"


def test_policy_token_matches_python(monkeypatch):
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    cs = "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + key
    result = run_cli(cs, "--expiry", str(EXPIRY))
    assert result.returncode == 0, result.stderr
    expected = sdk_token("myhub.azure-devices.net", key, EXPIRY, "iothubowner", monkeypatch)
    assert result.stdout == expected + "\n"


def test_the_sdk_accepts_the_token_for_its_identity():
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    cs = "HostName=myhub.azure-devices.net;DeviceId=dev;SharedAccessKey=" + key
    result = run_cli(cs, "--ttl", "600")
    assert result.returncode == 0, result.stderr
    token = sdk_sastoken.NonRenewableSasToken(result.stdout.strip())
    assert token.resource_uri == "myhub.azure-devices.net/devices/dev"
    assert 590 <= token.expiry_time - time.time() <= 600


def test_bad_connection_string_fails_on_stderr_only():
    result = run_cli("HostName=h;DeviceId=d;SharedAccessKey=not-base64!")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "SharedAccessKey is not base64" in result.stderr


def test_help_gives_the_ttl_default():
    run = subprocess.run([BINARY, "sas-token", "--help"], capture_output=True, text=True)
    assert run.returncode == 0
    options = run.stdout.split("OPTIONS:", 1)[1]
    ttl = " ".join(line.strip() for line in options.split("--ttl", 1)[1].split("--expiry")[0].splitlines())
    assert "default 3600" in ttl, run.stdout
