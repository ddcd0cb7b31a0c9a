"""Authentication and connection errors as azure-iot-device sees them: SAS token replacement
with update_sastoken before a short-lived token expires, a wrong key, refused connections."""
import os
import subprocess
import threading
import time

import pytest
from azure.iot.device import IoTHubDeviceClient, Message
from azure.iot.device.exceptions import ConnectionFailedError, CredentialError

from conftest import BINARY, bounded, new_key

SHORT_TTL = 20


def cli_token(connection_string, ttl):
    """A device SAS token from `iothub-sidecar sas-token --ttl`."""
    result = subprocess.run([BINARY, "sas-token", "--ttl", str(ttl)], capture_output=True, text=True, timeout=30,
                            env={"PATH": os.environ.get("PATH", ""), "IOTHUB_DEVICE_CONNECTION_STRING": connection_string})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


class StateLog:
    """Connection-state changes a client reports, with when they happened."""

    def __init__(self, client):
        self.events = []
        self.lock = threading.Lock()
        client.on_connection_state_change = lambda: self.record(client.connected)

    def record(self, connected):
        with self.lock:
            self.events.append((time.monotonic(), connected))

    def disconnects_after(self, moment):
        with self.lock:
            return [at for at, connected in self.events if not connected and at > moment]


def test_update_sastoken_before_a_short_lived_token_expires(hub, sas_device, device_clients):
    device_id, _, connection_string = sas_device("sas-renew")
    lapsing_id, _, lapsing_connection_string = sas_device("sas-lapse")

    issued = time.monotonic()
    token = cli_token(connection_string, SHORT_TTL)
    client = device_clients(IoTHubDeviceClient.create_from_sastoken(token, server_verification_cert=hub.ca_pem))
    # A second device keeps its short token, to show the hub really ends connections at expiry.
    lapsing = device_clients(IoTHubDeviceClient.create_from_sastoken(
        cli_token(lapsing_connection_string, SHORT_TTL), server_verification_cert=hub.ca_pem))
    log = StateLog(client)
    bounded(client.connect, timeout=20, what="connect with a short-lived token")
    bounded(lapsing.connect, timeout=20, what="connect the device that never renews")
    assert hub.is_connected(device_id) and hub.is_connected(lapsing_id)

    sent = ["renew-0"]
    bounded(client.send_message, Message("before renewal", message_id="renew-0"), timeout=20, what="send_message")

    fresh = hub.device_token(device_id, parse_key(connection_string), ttl=3600)
    bounded(client.update_sastoken, fresh, timeout=30, what="update_sastoken")
    renewed = time.monotonic()
    hub.wait_until(lambda: client.connected and hub.is_connected(device_id), 15, "the client reconnects with the new token")

    # Keep sending until well past the first token's expiry.
    index = 1
    while time.monotonic() < issued + SHORT_TTL + 4:
        message_id = "renew-{}".format(index)
        bounded(client.send_message, Message("after renewal {}".format(index), message_id=message_id),
                timeout=20, what="send_message after renewal")
        sent.append(message_id)
        index += 1
        time.sleep(1)

    arrived = [m["messageId"] for m in hub.telemetry(device_id, len(sent))]
    assert set(sent) <= set(arrived), "missing: {}".format(sorted(set(sent) - set(arrived)))
    assert hub.is_connected(device_id)
    assert client.connected
    # Past the reauthorisation the connection stayed up through the old token's expiry.
    settled = renewed + 3
    assert not log.disconnects_after(settled), log.events

    # The device that did not renew was disconnected when its token expired and cannot come back.
    hub.wait_until(lambda: not hub.is_connected(lapsing_id), 10, "the hub drops the device whose token expired")


def parse_key(connection_string):
    return dict(part.split("=", 1) for part in connection_string.split(";"))["SharedAccessKey"]


def test_wrong_key_is_a_credential_error(hub, sas_device, device_clients):
    device_id, _, _ = sas_device("wrong-key")
    client = device_clients(IoTHubDeviceClient.create_from_connection_string(
        hub.device_connection_string(device_id, new_key()), server_verification_cert=hub.ca_pem))
    with pytest.raises(CredentialError):
        bounded(client.connect, timeout=30, what="connect with a wrong key")
    assert not hub.is_connected(device_id)

    # A SAS token signed with a wrong key is refused the same way.
    forged = device_clients(IoTHubDeviceClient.create_from_sastoken(
        hub.device_token(device_id, new_key(), ttl=3600), server_verification_cert=hub.ca_pem))
    with pytest.raises(CredentialError):
        bounded(forged.connect, timeout=30, what="connect with a token signed by a wrong key")

    # And an unknown device too.
    stranger = device_clients(IoTHubDeviceClient.create_from_connection_string(
        hub.device_connection_string("no-such-" + device_id, new_key()), server_verification_cert=hub.ca_pem))
    with pytest.raises(CredentialError):
        bounded(stranger.connect, timeout=30, what="connect as an unknown device")


def test_refused_connections_without_retry_fail_clearly(hub, sas_device, device_clients):
    device_id, _, connection_string = sas_device("refused")
    faults = hub.set_faults(refuseConnectionsSeconds=30)
    assert faults["refuseConnectionsSeconds"] > 0
    client = device_clients(IoTHubDeviceClient.create_from_connection_string(
        connection_string, server_verification_cert=hub.ca_pem, connection_retry=False))
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError):
        bounded(client.connect, timeout=30, what="connect while the hub refuses connections")
    assert time.monotonic() - started < 10
    assert not hub.is_connected(device_id)

    # The refusal was the hub's fault injection: once cleared, the same client connects.
    hub.clear_faults()
    bounded(client.connect, timeout=30, what="connect after the faults are cleared")
    assert hub.is_connected(device_id)
