public import Foundation
public import IoTHubProtocol

/// How a device or module proves its identity to the hub.
public enum DeviceCredential: Sendable {
    /// A shared access key (base64): the client signs and renews its own SAS tokens.
    case symmetricKey(String)
    /// A SAS token supplied by the user; the client cannot renew it and asks for a new one
    /// (``IoTHubDeviceClient/newSASTokenRequired()``) before it expires.
    case sasToken(SASToken)
    /// An X.509 certificate and key presented in the TLS handshake.
    case x509(X509Credential)

    /// `sas` (either SAS form) or `x509`, for status reports.
    public var kind: String {
        switch self {
        case .symmetricKey: "symmetricKey"
        case .sasToken: "sasToken"
        case .x509: "x509"
        }
    }
}

/// Where a file upload goes: the answer of the hub's `POST /devices/{id}/files`.
public struct StorageInfo: Sendable, Hashable, Codable {
    public var correlationId: String
    public var hostName: String
    public var containerName: String
    public var blobName: String
    public var sasToken: String

    public init(correlationId: String, hostName: String, containerName: String, blobName: String, sasToken: String) {
        self.correlationId = correlationId
        self.hostName = hostName
        self.containerName = containerName
        self.blobName = blobName
        self.sasToken = sasToken
    }

    /// `https://{hostName}/{containerName}/{blobName}{sasToken}`: where to PUT the blob.
    public var blobURL: String {
        let path = blobName.split(separator: "/", omittingEmptySubsequences: false).map { PercentEncoding.encode(String($0)) }.joined(separator: "/")
        return "https://\(hostName)/\(containerName)/\(path)\(sasToken)"
    }
}

/// The client's connection as applications see it.
public enum ConnectionState: String, Sendable, Codable {
    /// Not connected, and not trying to.
    case disconnected
    /// Connecting at the application's request (or on first use with auto-connect).
    case connecting
    /// Connected to the hub.
    case connected
    /// The connection was lost or is being renewed; the client is reconnecting.
    case reconnecting
}

/// A change of ``ConnectionState``, with its time and cause.
public struct ConnectionStateChange: Sendable {
    public var state: ConnectionState
    public var since: Date
    /// Why the connection was lost, when it was.
    public var reason: IoTHubError?

    public init(state: ConnectionState, since: Date, reason: IoTHubError? = nil) {
        self.state = state
        self.since = since
        self.reason = reason
    }
}

/// A finished one-call upload (``IoTHubDeviceClient/uploadBlob(named:length:contentType:body:)``).
public struct BlobUploadResult: Sendable, Hashable {
    /// Where the hub put the blob.
    public var storageInfo: StorageInfo

    /// The blob's URL without its SAS token.
    public var blobURLWithoutToken: String {
        String(storageInfo.blobURL.dropLast(storageInfo.sasToken.count))
    }
}

/// How a one-call upload failed after the hub had given it a place: the error, the upload's
/// correlation id (to send the notification again) and blob storage's status when it answered.
public struct BlobUploadFailure: Error, Sendable {
    public var error: IoTHubError
    public var correlationId: String?
    /// Blob storage's HTTP status, when storage itself refused the upload.
    public var upstreamStatus: Int?
}
