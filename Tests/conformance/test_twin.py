"""Device twins: desired properties from azure-iot-hub's update_twin reach the device's
`on_twin_desired_properties_patch_received`; the device's get_twin and reported patches show up
in the service's get_twin."""
import queue

import pytest
from azure.iot.hub.models import Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from conftest import bounded


def without_metadata(properties):
    return {key: value for key, value in properties.items() if key != "$metadata"}


def next_patch(patches, timeout=10):
    try:
        return patches.get(timeout=timeout)
    except queue.Empty:
        pytest.fail("the device received no desired-properties patch within {} s".format(timeout))


def test_update_twin_desired_properties_reach_the_device(hub, registry_manager, connect_device):
    device_id, client, _ = connect_device("twin-desired")
    patches = queue.Queue()
    bounded(setattr, client, "on_twin_desired_properties_patch_received", patches.put,
            what="enable desired-property patches")

    before = registry_manager.get_twin(device_id)
    first_version = before.properties.desired["$version"]

    # With the twin's etag, as Microsoft's samples do.
    desired = {"interval": 5, "mode": {"level": "high", "colours": ["red", "green"]}, "label": "ünïcødé ✓"}
    updated = registry_manager.update_twin(device_id, Twin(properties=TwinProperties(desired=desired)), before.etag)
    assert updated.etag != before.etag
    assert without_metadata(updated.properties.desired) == dict(desired, **{"$version": first_version + 1})

    patch = next_patch(patches)
    assert patch == dict(desired, **{"$version": first_version + 1})

    # A stale etag is refused and nothing reaches the device.
    with pytest.raises(HttpOperationError) as stale:
        registry_manager.update_twin(device_id, Twin(properties=TwinProperties(desired={"interval": 99})), before.etag)
    assert stale.value.response.status_code == 412

    # Without an etag (the SDK sends If-Match: "*"): null deletes, objects merge.
    registry_manager.update_twin(
        device_id, Twin(properties=TwinProperties(desired={"interval": None, "mode": {"level": "low"}})))
    patch = next_patch(patches)
    assert patch == {"interval": None, "mode": {"level": "low"}, "$version": first_version + 2}

    twin = registry_manager.get_twin(device_id)
    assert without_metadata(twin.properties.desired) == {
        "mode": {"level": "low", "colours": ["red", "green"]}, "label": "ünïcødé ✓", "$version": first_version + 2}
    assert twin.connection_state == "Connected"

    # The device's own view agrees with the service's.
    device_twin = bounded(client.get_twin, timeout=20, what="get_twin")
    assert without_metadata(device_twin["desired"]) == without_metadata(twin.properties.desired)
    assert patches.empty(), "unexpected extra patch: {}".format(patches.queue)


def test_replace_twin_desired_properties_reach_the_device(hub, registry_manager, connect_device):
    device_id, client, _ = connect_device("twin-replace")
    patches = queue.Queue()
    bounded(setattr, client, "on_twin_desired_properties_patch_received", patches.put,
            what="enable desired-property patches")
    etag = registry_manager.get_twin(device_id).etag
    etag = registry_manager.update_twin(device_id, Twin(properties=TwinProperties(desired={"old": 1, "keep": 2})), etag).etag
    next_patch(patches)

    # (Without an etag the SDK sends If-Match: "*", covered by the update test above.)
    replaced = registry_manager.replace_twin(
        device_id, Twin(tags={"site": "lab"}, properties=TwinProperties(desired={"keep": 3, "new": True})), etag)
    version = replaced.properties.desired["$version"]
    assert without_metadata(replaced.properties.desired) == {"keep": 3, "new": True, "$version": version}
    assert replaced.tags == {"site": "lab"}

    # The device can rebuild the new document from the patch: "old" must be removed.
    patch = next_patch(patches)
    assert patch["$version"] == version
    assert patch.get("old", None) is None
    assert patch["keep"] == 3 and patch["new"] is True
    device_twin = bounded(client.get_twin, timeout=20, what="get_twin")
    assert without_metadata(device_twin["desired"]) == {"keep": 3, "new": True, "$version": version}


def test_device_get_twin_and_patch_reported_properties(hub, registry_manager, connect_device):
    device_id, client, _ = connect_device("twin-reported")

    twin = bounded(client.get_twin, timeout=20, what="get_twin")
    assert set(twin) >= {"desired", "reported"}
    initial_version = twin["reported"]["$version"]
    service_twin = registry_manager.get_twin(device_id)
    assert service_twin.properties.reported["$version"] == initial_version
    assert without_metadata(twin["desired"]) == without_metadata(service_twin.properties.desired)

    reported = {"temperature": 21.5, "firmware": {"version": "1.2.3", "flags": ["a", "b"]}, "note": "naïve ☃"}
    bounded(client.patch_twin_reported_properties, reported, timeout=20, what="patch_twin_reported_properties")
    service_twin = registry_manager.get_twin(device_id)
    assert without_metadata(service_twin.properties.reported) == dict(reported, **{"$version": initial_version + 1})

    bounded(client.patch_twin_reported_properties, {"firmware": {"flags": None}, "temperature": None, "online": True},
            timeout=20, what="patch_twin_reported_properties")
    service_twin = registry_manager.get_twin(device_id)
    expected = {"firmware": {"version": "1.2.3"}, "note": "naïve ☃", "online": True, "$version": initial_version + 2}
    assert without_metadata(service_twin.properties.reported) == expected

    twin = bounded(client.get_twin, timeout=20, what="get_twin")
    assert without_metadata(twin["reported"]) == expected
