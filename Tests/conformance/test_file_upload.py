"""File upload as azure-iot-device does it: get_storage_info_for_blob, Azure Blob "Put Blob" to
the SAS URL, notify_blob_upload_status; the hub records the notification and holds the bytes."""
import secrets
import urllib.parse

import requests

from conftest import bounded


def blob_url(info, blob_name):
    # As Azure's storage SDKs build it: the blob name is percent-encoded, '/' kept.
    return "https://{}/{}/{}{}".format(
        info["hostName"], info["containerName"], urllib.parse.quote(blob_name, safe="/~"), info["sasToken"])


def test_upload_a_file(hub, connect_device):
    device_id, client, _ = connect_device("upload")
    data = secrets.token_bytes(100_000) + "tail ✓".encode()
    blob_name = "reports/day 1 & more.bin"

    info = bounded(client.get_storage_info_for_blob, blob_name, timeout=20, what="get_storage_info_for_blob")
    assert set(info) >= {"correlationId", "hostName", "containerName", "blobName", "sasToken"}
    assert info["blobName"].endswith(blob_name)

    response = requests.put(blob_url(info, info["blobName"]), data=data, verify=hub.ca_path, timeout=30,
                            headers={"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.text

    # The SAS grants this blob only.
    other = requests.put(blob_url(info, info["blobName"] + ".other"), data=b"x", verify=hub.ca_path, timeout=30,
                         headers={"x-ms-blob-type": "BlockBlob"})
    assert other.status_code in (401, 403), other.status_code

    bounded(client.notify_blob_upload_status, info["correlationId"], True, 201, "uploaded by the conformance suite",
            timeout=20, what="notify_blob_upload_status")

    note = hub.file_uploads(info["correlationId"])
    assert note is not None, "no file-upload notification for {}".format(info["correlationId"])
    assert note["deviceId"] == device_id
    assert note["blobName"] == info["blobName"]
    assert note["isSuccess"] is True
    assert note["statusCode"] == 201
    assert note["statusDescription"] == "uploaded by the conformance suite"
    assert note["blobUri"] == blob_url(info, info["blobName"]).split("?")[0]

    stored = hub.request("GET", "local/blobs/{}/{}".format(
        info["containerName"], urllib.parse.quote(info["blobName"], safe="/")))
    assert stored.status_code == 200, stored.text
    assert stored.content == data

    # Get Blob with the same SAS returns the bytes too.
    fetched = requests.get(blob_url(info, info["blobName"]), verify=hub.ca_path, timeout=30)
    assert fetched.status_code == 200
    assert fetched.content == data


def test_failed_upload_is_notified(hub, connect_device):
    device_id, client, _ = connect_device("upload-fail")
    info = bounded(client.get_storage_info_for_blob, "never-written.txt", timeout=20, what="get_storage_info_for_blob")
    bounded(client.notify_blob_upload_status, info["correlationId"], False, 500, "disk on fire",
            timeout=20, what="notify_blob_upload_status")
    note = hub.file_uploads(info["correlationId"])
    assert note is not None
    assert (note["deviceId"], note["isSuccess"], note["statusCode"], note["statusDescription"]) == (
        device_id, False, 500, "disk on fire")
