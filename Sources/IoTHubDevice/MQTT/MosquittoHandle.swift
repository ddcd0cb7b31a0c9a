/// A libmosquitto client handle (`struct mosquitto *`), the one value the MQTT types share
/// across threads without the compiler's check.
///
/// `@unchecked Sendable` — why every use is safe:
/// - Lifetime: ``MosquittoClient`` creates the handle in `init` (`mosquitto_new`) and destroys
///   it in `deinit` (`mosquitto_destroy`), after `stop()` has joined its network thread, the only
///   other holder. That `deinit` never runs on the network thread: libmosquitto's callbacks find
///   the client through an unretained pointer, and the device client, when it goes away, hands
///   its last reference to the client's control queue (`disconnectWithoutWaiting()`).
/// - Set-up (options, callbacks, TLS context) happens in `MosquittoClient.init`, before the
///   handle is shared.
/// - `mosquitto_connect`, `mosquitto_reconnect`, `mosquitto_username_pw_set` and the socket
///   shutdown of a hung disconnect run only on the client's serial control queue, with the
///   network thread stopped and the publish gate closed, so no publish overlaps them.
/// - `mosquitto_publish` (under the publish gate's lock), `mosquitto_subscribe_multiple` and
///   `mosquitto_disconnect` are called from any thread: with `mosquitto_threaded_set(true)`
///   libmosquitto guards the state they share with the loop functions by its own mutexes, as
///   it does for its own loop thread.
/// - The loop functions (`mosquitto_loop_read`, `_write`, `_misc`, `mosquitto_want_write`,
///   `mosquitto_socket`, `mosquitto_ssl_get`) run only on the one ``MosquittoNetworkThread`` of
///   the current connection; the control queue stops that thread before it starts the next.
struct MosquittoHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}
