"""The README's table of endpoints and the Python SDK's methods they stand for: every Python
name it gives exists in azure-iot-device on the class it is given for (`IoTHubDeviceClient`
unless the row names `IoTHubModuleClient` or `Message`), so the table cannot list a module
client method as a device client's."""
import os
import re

from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
CLASSES = {"IoTHubDeviceClient": IoTHubDeviceClient, "IoTHubModuleClient": IoTHubModuleClient, "Message": Message}


def mapping_rows():
    with open(README) as file:
        text = file.read()
    start = text.index("| endpoint | Python `IoTHubDeviceClient`")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append((cells[0], cells[-1]))
    return rows


def python_names(cell):
    """(class, attribute) for each Python name in backticks: `Class.name` or a bare `name`
    (the device client's). Header names, values and URLs in the same cell are skipped."""
    for token in re.findall(r"`([^`]+)`", cell):
        if ":" in token or "-" in token or " " in token or "/" in token:
            continue
        owner, _, name = token.rpartition(".")
        yield (owner or "IoTHubDeviceClient"), name


def test_every_python_name_in_the_mapping_table_belongs_to_the_class_given():
    rows = mapping_rows()
    assert len(rows) >= 10, rows
    checked = 0
    for endpoint, cell in rows:
        for owner, name in python_names(cell):
            assert owner in CLASSES, (endpoint, owner)
            assert hasattr(CLASSES[owner], name), "{}: {} has no {}".format(endpoint, owner, name)
            checked += 1
    assert checked >= 15


def test_module_only_methods_are_listed_for_the_module_client():
    listed = {(owner, name) for _, cell in mapping_rows() for owner, name in python_names(cell)}
    for name in ("send_message_to_output",):
        assert not hasattr(IoTHubDeviceClient, name)
        assert ("IoTHubModuleClient", name) in listed
    assert ("Message", "set_as_security_message") in listed
