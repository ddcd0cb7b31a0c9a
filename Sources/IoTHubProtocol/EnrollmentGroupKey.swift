/// The Device Provisioning Service's symmetric-key enrollment groups: each device of a group
/// holds a key derived from the group's, so the device (IoTHubDevice) and the service
/// (LocalHub) derive it here, once.
public enum EnrollmentGroupKey {
    /// The key of the device with `registrationId` in the group whose key is `groupKey`:
    /// base64(HMAC-SHA256(key: base64-decoded group key, message: the registration id)), as
    /// Azure's documentation and SDKs derive it. Throws `ValueError` when the group key is not
    /// base64.
    public static func deviceKey(groupKey: String, registrationId: String) throws(IoTHubError) -> String {
        do throws(IoTHubError) {
            return try SASToken.sign(registrationId, key: groupKey)
        } catch {
            if case .valueError = error { throw .valueError(field: "group key", reason: "is not a base64-encoded key") }
            throw error
        }
    }
}
