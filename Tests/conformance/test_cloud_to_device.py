"""Cloud-to-device messages sent through the hub's /local API and received by azure-iot-device's
on_message_received, with every property; the hub's queue empties once the device has them."""
import queue

import pytest

from conftest import bounded


def next_message(messages, timeout=10):
    try:
        return messages.get(timeout=timeout)
    except queue.Empty:
        pytest.fail("no cloud-to-device message arrived within {} s".format(timeout))


def test_receive_cloud_to_device_messages_with_properties(hub, registry_manager, connect_device):
    device_id, client, _ = connect_device("c2d")
    messages = queue.Queue()
    bounded(setattr, client, "on_message_received", messages.put, what="enable C2D")

    body = "ünïcødé body & binary-safe".encode("utf-8") + b"\x00\xff"
    message_id = hub.send_cloud_to_device(device_id, body, {
        "iothub-messageid": "c2d-1",
        "iothub-correlationid": "corr/1&2",
        "iothub-contenttype": "application/json",
        "iothub-contentencoding": "utf-8",
        "iothub-ack": "full",
        "iothub-app-colour": "blue",
        "iothub-app-hostile": "a&b=c/d %",
        "iothub-app-empty": "",
    })
    assert message_id == "c2d-1"
    message = next_message(messages)
    assert message.data == body
    assert message.message_id == "c2d-1"
    assert message.correlation_id == "corr/1&2"
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert message.ack == "full"
    assert message.custom_properties == {"colour": "blue", "hostile": "a&b=c/d %", "empty": ""}

    # Without a message id the hub assigns one and the device receives that id.
    generated = hub.send_cloud_to_device(device_id, b"second", {"iothub-ack": "none"})
    assert generated
    message = next_message(messages)
    assert message.data == b"second"
    assert message.message_id == generated
    assert message.ack == "none"
    assert message.custom_properties == {}

    # The device acknowledged both (PUBACK): nothing is left in the hub's queue for it.
    hub.wait_until(lambda: registry_manager.get_device(device_id).cloud_to_device_message_count == 0, 10,
                   "the hub's cloud-to-device queue of {} is empty".format(device_id))
    assert messages.empty()


def test_cloud_to_device_messages_queued_while_offline_are_delivered_on_connect(hub, registry_manager, connect_device):
    device_id, client, _ = connect_device("c2d-offline")
    messages = queue.Queue()
    bounded(setattr, client, "on_message_received", messages.put, what="enable C2D")
    bounded(client.disconnect, timeout=20, what="disconnect")
    hub.wait_until(lambda: not hub.is_connected(device_id), 10, "the device is disconnected")

    for index in range(3):
        hub.send_cloud_to_device(device_id, "queued {}".format(index).encode(), {"iothub-messageid": "q-{}".format(index)})
    assert registry_manager.get_device(device_id).cloud_to_device_message_count == 3

    # The SDK does not subscribe again on connect: the hub must keep the subscription.
    bounded(client.connect, timeout=20, what="connect")
    received = [next_message(messages) for _ in range(3)]
    assert [m.message_id for m in received] == ["q-0", "q-1", "q-2"]
    assert [m.data for m in received] == [b"queued 0", b"queued 1", b"queued 2"]
    hub.wait_until(lambda: registry_manager.get_device(device_id).cloud_to_device_message_count == 0, 10,
                   "the hub's cloud-to-device queue of {} is empty".format(device_id))


def test_setting_the_handler_to_none_unsubscribes_and_the_hub_keeps_messages_queued(hub, registry_manager, connect_device):
    """The reference for the Swift client's switching off: azure-iot-device unsubscribes when
    on_message_received is set to None, and the hub then keeps messages queued (undelivered)
    until a handler is set again."""
    device_id, client, _ = connect_device("c2d-off")
    messages = queue.Queue()
    bounded(setattr, client, "on_message_received", messages.put, what="enable C2D")
    bounded(setattr, client, "on_message_received", None, what="disable C2D")
    hub.send_cloud_to_device(device_id, b"while off", {"iothub-messageid": "off-1"})
    assert hub.is_connected(device_id)
    assert registry_manager.get_device(device_id).cloud_to_device_message_count == 1
    assert messages.empty()

    bounded(setattr, client, "on_message_received", messages.put, what="enable C2D again")
    message = next_message(messages)
    assert message.message_id == "off-1" and message.data == b"while off"
    hub.wait_until(lambda: registry_manager.get_device(device_id).cloud_to_device_message_count == 0, 10,
                   "the hub's cloud-to-device queue of {} is empty".format(device_id))
