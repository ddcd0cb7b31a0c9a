"""The README's table of endpoints and the Python SDK's methods they stand for: every Python
name it gives exists in azure-iot-device on the class it is given for (`IoTHubDeviceClient`
unless the row names `IoTHubModuleClient` or `Message`), so the table cannot list a module
client method as a device client's; every keyword it gives (`name=`) is one the clients'
constructors take."""
import os
import re

import pytest
from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message
from azure.iot.device.iothub.abstract_clients import _validate_kwargs

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
CLASSES = {"IoTHubDeviceClient": IoTHubDeviceClient, "IoTHubModuleClient": IoTHubModuleClient, "Message": Message}
# Attributes a class sets in its initializer (Message.custom_properties).
INSTANCES = {"Message": Message("")}


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
    (the device client's); ("keyword", name) for a constructor keyword `name=`. Header names,
    property names (`$.…`), values and URLs in the same cell are skipped."""
    for token in re.findall(r"`([^`]+)`", cell):
        if ":" in token or "-" in token or " " in token or "/" in token or token.startswith("$"):
            continue
        if token.endswith("="):
            yield "keyword", token[:-1]
            continue
        owner, _, name = token.rpartition(".")
        yield (owner or "IoTHubDeviceClient"), name


def test_every_python_name_in_the_mapping_table_belongs_to_the_class_given():
    rows = mapping_rows()
    assert len(rows) >= 10, rows
    checked = 0
    for endpoint, cell in rows:
        for owner, name in python_names(cell):
            checked += 1
            if owner == "keyword":
                _validate_kwargs(**{name: None})  # TypeError for a keyword the constructors do not take
                continue
            assert owner in CLASSES, (endpoint, owner)
            assert hasattr(CLASSES[owner], name) or hasattr(INSTANCES.get(owner), name), \
                "{}: {} has no {}".format(endpoint, owner, name)
    assert checked >= 15


def test_module_only_methods_are_listed_for_the_module_client():
    listed = {(owner, name) for _, cell in mapping_rows() for owner, name in python_names(cell)}
    for name in ("send_message_to_output", "invoke_method", "create_from_edge_environment"):
        assert not hasattr(IoTHubDeviceClient, name)
        assert ("IoTHubModuleClient", name) in listed
    assert ("Message", "set_as_security_message") in listed


def test_plug_and_play_is_mapped_to_what_the_python_sdk_has():
    """azure-iot-device 2.x announces a model id through `product_info` (its Plug and Play
    samples pass their model id that way); it has no `model_id` keyword, so the table does
    not claim one."""
    listed = {(owner, name) for _, cell in mapping_rows() for owner, name in python_names(cell)}
    assert ("keyword", "product_info") in listed and ("Message", "custom_properties") in listed
    with pytest.raises(TypeError):
        _validate_kwargs(model_id="dtmi:com:example:Thermostat;1")
