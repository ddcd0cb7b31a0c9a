"""Device identities through azure-iot-hub's IoTHubRegistryManager: SAS and X.509 self-signed
devices, with IoT Hub's etag rules, checked against what the hub then accepts."""
import base64
import hashlib
import ssl
import subprocess

import pytest
from azure.iot.device import IoTHubDeviceClient, Message, X509
from azure.iot.device.exceptions import CredentialError
from msrest.exceptions import HttpOperationError

from conftest import bounded, new_key, unique_id


def assert_is_key(text):
    assert text, "expected a generated key, got {!r}".format(text)
    assert len(base64.b64decode(text, validate=True)) >= 16


def connect_and_disconnect(hub, device_id, key):
    client = IoTHubDeviceClient.create_from_connection_string(
        hub.device_connection_string(device_id, key), server_verification_cert=hub.ca_pem, connection_retry=False)
    try:
        bounded(client.connect, timeout=20, what="connect")
        assert hub.is_connected(device_id)
    finally:
        bounded(client.shutdown, timeout=20, what="shutdown")


def test_sas_device_with_given_keys_create_get_update_delete(hub, registry_manager):
    device_id = unique_id("reg-sas")
    primary, secondary = new_key(), new_key()
    try:
        created = registry_manager.create_device_with_sas(device_id, primary, secondary, "enabled")
        assert created.device_id == device_id
        assert created.status == "enabled"
        assert created.authentication.type == "sas"
        assert created.authentication.symmetric_key.primary_key == primary
        assert created.authentication.symmetric_key.secondary_key == secondary
        assert created.etag

        # Creating it again is a conflict, as in IoT Hub.
        with pytest.raises(HttpOperationError) as conflict:
            registry_manager.create_device_with_sas(device_id, primary, secondary, "enabled")
        assert conflict.value.response.status_code == 409

        fetched = registry_manager.get_device(device_id)
        assert fetched.device_id == device_id
        assert fetched.etag == created.etag
        assert fetched.generation_id == created.generation_id
        assert fetched.authentication.symmetric_key.primary_key == primary
        assert fetched.authentication.symmetric_key.secondary_key == secondary
        assert fetched.connection_state == "Disconnected"

        # The hub accepts the registered key, on the primary and on the secondary.
        connect_and_disconnect(hub, device_id, primary)
        connect_and_disconnect(hub, device_id, secondary)

        # Update with the current etag: new keys, disabled.
        new_primary, new_secondary = new_key(), new_key()
        updated = registry_manager.update_device_with_sas(
            device_id, fetched.etag, new_primary, new_secondary, "disabled", status_reason="maintenance")
        assert updated.etag != fetched.etag
        assert updated.status == "disabled"
        assert updated.authentication.symmetric_key.primary_key == new_primary

        # A stale etag is refused (412) and changes nothing.
        with pytest.raises(HttpOperationError) as stale:
            registry_manager.update_device_with_sas(device_id, fetched.etag, new_key(), new_key(), "enabled")
        assert stale.value.response.status_code == 412

        after = registry_manager.get_device(device_id)
        assert after.etag == updated.etag
        assert after.status == "disabled"
        assert after.status_reason == "maintenance"
        assert after.authentication.symmetric_key.primary_key == new_primary
        assert after.authentication.symmetric_key.secondary_key == new_secondary

        # Enable it again (etag "*" by default) and check the hub uses the new keys, not the old.
        registry_manager.update_device_with_sas(device_id, None, new_primary, new_secondary, "enabled")
        connect_and_disconnect(hub, device_id, new_primary)
        old_key_client = IoTHubDeviceClient.create_from_connection_string(
            hub.device_connection_string(device_id, primary), server_verification_cert=hub.ca_pem, connection_retry=False)
        try:
            with pytest.raises(CredentialError):
                bounded(old_key_client.connect, timeout=20, what="connect with the replaced key")
        finally:
            bounded(old_key_client.shutdown, timeout=20, what="shutdown")

        current = registry_manager.get_device(device_id)
        registry_manager.delete_device(device_id, current.etag)
        with pytest.raises(HttpOperationError) as gone:
            registry_manager.get_device(device_id)
        assert gone.value.response.status_code == 404
        assert hub.request("GET", "devices/" + device_id, params={"api-version": "2021-04-12"}).status_code == 404
    finally:
        try:
            registry_manager.delete_device(device_id)
        except HttpOperationError:
            pass


def test_sas_device_without_keys_gets_generated_keys(hub, registry_manager):
    device_id = unique_id("reg-nokeys")
    try:
        created = registry_manager.create_device_with_sas(device_id, None, None, "enabled")
        keys = created.authentication.symmetric_key
        assert_is_key(keys.primary_key)
        assert_is_key(keys.secondary_key)
        assert keys.primary_key != keys.secondary_key

        fetched = registry_manager.get_device(device_id)
        assert fetched.authentication.symmetric_key.primary_key == keys.primary_key
        assert fetched.authentication.symmetric_key.secondary_key == keys.secondary_key

        connect_and_disconnect(hub, device_id, keys.primary_key)

        registry_manager.delete_device(device_id)
        with pytest.raises(HttpOperationError) as gone:
            registry_manager.get_device(device_id)
        assert gone.value.response.status_code == 404
    finally:
        try:
            registry_manager.delete_device(device_id)
        except HttpOperationError:
            pass


@pytest.fixture
def self_signed_certificate(tmp_path):
    """A self-signed device certificate made with the openssl CLI; returns (cert, key, SHA-1 thumbprint)."""
    def make(common_name):
        cert, key = tmp_path / (common_name + ".pem"), tmp_path / (common_name + ".key")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=" + common_name],
            check=True, capture_output=True, timeout=30)
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        return str(cert), str(key), hashlib.sha1(der).hexdigest().upper()
    return make


def test_x509_self_signed_device_connects_with_its_certificate(hub, registry_manager, self_signed_certificate, device_clients):
    device_id = unique_id("reg-x509")
    cert, key, thumbprint = self_signed_certificate(device_id)
    _, _, other_thumbprint = self_signed_certificate(device_id + "-other")
    try:
        created = registry_manager.create_device_with_x509(device_id, thumbprint, other_thumbprint, "enabled")
        assert created.authentication.type == "selfSigned"
        assert created.authentication.x509_thumbprint.primary_thumbprint.upper() == thumbprint
        fetched = registry_manager.get_device(device_id)
        assert fetched.authentication.type == "selfSigned"
        assert fetched.authentication.x509_thumbprint.primary_thumbprint.upper() == thumbprint
        assert fetched.authentication.x509_thumbprint.secondary_thumbprint.upper() == other_thumbprint

        client = device_clients(IoTHubDeviceClient.create_from_x509_certificate(
            X509(cert, key), hostname="localhost", device_id=device_id, server_verification_cert=hub.ca_pem))
        bounded(client.connect, timeout=30, what="connect with X.509")
        assert hub.is_connected(device_id)
        assert registry_manager.get_device(device_id).connection_state == "Connected"

        message = Message("from an X.509 device", message_id="x509-1")
        bounded(client.send_message, message, timeout=20, what="send_message")
        [received] = hub.telemetry(device_id, 1)
        assert received["messageId"] == "x509-1"
        assert received["bodyText"] == "from an X.509 device"

        # The twin works over the same certificate-authenticated connection.
        twin = bounded(client.get_twin, timeout=20, what="get_twin")
        assert "$version" in twin["desired"]
    finally:
        try:
            registry_manager.delete_device(device_id)
        except HttpOperationError:
            pass


def test_x509_device_with_an_unregistered_certificate_is_refused(hub, registry_manager, self_signed_certificate, device_clients):
    device_id = unique_id("reg-x509-bad")
    _, _, thumbprint = self_signed_certificate(device_id)
    stranger_cert, stranger_key, _ = self_signed_certificate(device_id + "-stranger")
    try:
        registry_manager.create_device_with_x509(device_id, thumbprint, None, "enabled")
        client = device_clients(IoTHubDeviceClient.create_from_x509_certificate(
            X509(stranger_cert, stranger_key), hostname="localhost", device_id=device_id,
            server_verification_cert=hub.ca_pem, connection_retry=False))
        with pytest.raises(CredentialError):
            bounded(client.connect, timeout=30, what="connect with an unregistered certificate")
        assert not hub.is_connected(device_id)
    finally:
        try:
            registry_manager.delete_device(device_id)
        except HttpOperationError:
            pass
