#!/usr/bin/env python3
"""Writes the SAS test vectors the Swift tests check against.

The tokens are computed here with Python's standard library only (hmac, hashlib, base64,
urllib.parse.quote), the same primitives Microsoft's Python SDK uses, so they are an
independent witness for the Swift implementation. Run it from the repository root:

    python3 Tests/IoTHubProtocolTests/Fixtures/generate_sas_vectors.py
"""
import base64
import hashlib
import hmac
import json
import os
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
CLI_FIXTURES = os.path.join(HERE, "..", "..", "SidecarCLITests", "Fixtures")


def key_of_length(length, seed):
    """A deterministic key of `length` bytes, base64-encoded."""
    raw = hashlib.sha512(seed.encode()).digest()
    while len(raw) < length:
        raw += hashlib.sha512(raw).digest()
    return base64.b64encode(raw[:length]).decode()


def token(uri, key, expiry, key_name=None):
    encoded_uri = urllib.parse.quote(uri, safe="")
    to_sign = encoded_uri + "\n" + str(expiry)
    digest = hmac.HMAC(base64.b64decode(key), to_sign.encode("utf-8"), hashlib.sha256).digest()
    signature = base64.b64encode(digest).decode()
    text = "SharedAccessSignature sr={}&sig={}&se={}".format(
        encoded_uri, urllib.parse.quote(signature, safe=""), expiry
    )
    if key_name:
        text += "&skn=" + key_name
    return encoded_uri, to_sign, signature, text


def main():
    identities = [
        {"hostName": "myhub.azure-devices.net", "deviceId": "device-1"},
        {"hostName": "MyHub.Azure-Devices.NET", "deviceId": "Device_Upper"},
        {"hostName": "myhub.azure-devices.net", "deviceId": "sensor.42", "moduleId": "filter"},
        {"hostName": "HUB-2.azure-devices.net", "deviceId": "d@x!(1)", "moduleId": "Mod$A"},
        {"hostName": "localhost", "deviceId": "a b+c=d%e"},
        {"hostName": "myhub.azure-devices.net", "keyName": "iothubowner"},
    ]
    key_lengths = [1, 16, 32, 64, 100]
    expiries = [1, 1_700_000_000, 1_900_000_000, 2_147_483_647, 2_147_483_648, 4_102_444_800]
    vectors = []
    for index, identity in enumerate(identities):
        for length in key_lengths:
            key = key_of_length(length, "key-{}-{}".format(index, length))
            for expiry in expiries:
                if "deviceId" in identity:
                    uri = identity["hostName"] + "/devices/" + identity["deviceId"]
                    if "moduleId" in identity:
                        uri += "/modules/" + identity["moduleId"]
                else:
                    uri = identity["hostName"]
                encoded_uri, to_sign, signature, text = token(
                    uri, key, expiry, identity.get("keyName")
                )
                vectors.append(
                    dict(identity, key=key, expiry=expiry, resourceURI=uri,
                         encodedResourceURI=encoded_uri, stringToSign=to_sign,
                         signature=signature, token=text)
                )
    with open(os.path.join(HERE, "sas_vectors.json"), "w") as out:
        json.dump(vectors, out, indent=1, sort_keys=True)
        out.write("\n")

    # The acceptance check of `iothub-sidecar sas-token --expiry 1900000000`.
    cli_cases = []
    for name, cs_parts, uri, key_name in [
        ("device", [("HostName", "myhub.azure-devices.net"), ("DeviceId", "device-1")],
         "myhub.azure-devices.net/devices/device-1", None),
        ("module", [("HostName", "myhub.azure-devices.net"), ("DeviceId", "device-1"),
                    ("ModuleId", "filter")],
         "myhub.azure-devices.net/devices/device-1/modules/filter", None),
        ("policy", [("HostName", "myhub.azure-devices.net"), ("SharedAccessKeyName", "iothubowner")],
         "myhub.azure-devices.net", "iothubowner"),
    ]:
        key = key_of_length(32, "cli-" + name)
        connection_string = ";".join("{}={}".format(k, v) for k, v in cs_parts + [("SharedAccessKey", key)])
        cli_cases.append({
            "name": name,
            "connectionString": connection_string,
            "expiry": 1_900_000_000,
            "token": token(uri, key, 1_900_000_000, key_name)[3],
        })
    with open(os.path.join(CLI_FIXTURES, "cli_tokens.json"), "w") as out:
        json.dump(cli_cases, out, indent=1, sort_keys=True)
        out.write("\n")


if __name__ == "__main__":
    main()
