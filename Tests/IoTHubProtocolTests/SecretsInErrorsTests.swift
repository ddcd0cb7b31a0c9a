import Foundation
import IoTHubProtocol
import Testing

/// No error of the parsers ever repeats a secret, wherever in a malformed input the secret is:
/// errors reach terminals, logs and HTTP answers.
@Suite struct SecretsInErrorsTests {
    /// A random secret shaped like a device key (base64 of 32 bytes) or a SAS signature.
    static func secret() -> String {
        Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }

    /// Every way a user could misplace `secret` in a connection string.
    static func connectionStrings(hiding secret: String) -> [String] {
        let token = "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=\(secret)&se=1"
        return [
            secret, "\(secret);", ";\(secret)", "HostName=h;DeviceId=d;\(secret)",
            "HostName=h;DeviceId=d;SharedAccessKey:\(secret)",
            "HostName=h;DeviceId=d;SharedAccessKey \(secret)", "HostName=h;DeviceId=d;sharedaccesskey=\(secret)",
            "HostName=h;DeviceId=d;\(secret)=x",
            "HostName=h;\(secret)", "\(secret);HostName=h;DeviceId=d",
            "HostName=h;DeviceId=d;SharedAccessKey=\(secret);SharedAccessKey=\(secret)",
            "HostName=h;DeviceId=d;SharedAccessKey=\(secret)!",
            "HostName=h;DeviceId=d;SharedAccessKey=\(secret) \(secret)",
            "HostName=h;DeviceId=d;SharedAccessKey=\(secret);x509=true",
            "HostName=h;DeviceId=d;SharedAccessKey=\(secret);SharedAccessSignature=\(token)",
            "HostName=h;SharedAccessKey=\(secret)",
            "HostName=h;SharedAccessKeyName=owner;DeviceId=d;SharedAccessKey=\(secret)",
            "HostName=h;DeviceId=d;SharedAccessSignature=\(secret)",
            "HostName=h;DeviceId=d;SharedAccessSignature=\(token)&se=2",
            "HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature sr=a&\(secret)&se=1",
            "HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature sr=a&sig=\(secret)&se=soon",
            "HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature sr=a&sig=\(secret)&\(secret)=1",
            "HostName=h;DeviceId=d;SharedAccessKey=\(secret)\n;DeviceId=e",
            "HostName=h;DeviceId=d;;SharedAccessKey=\(secret)",
        ]
    }

    /// Every way a user could misplace `secret` in a SAS token.
    static func tokens(hiding secret: String) -> [String] {
        [
            secret, "SharedAccessSignature \(secret)", "SharedAccessSignature sr=a&\(secret)&se=1",
            "SharedAccessSignature sr=a&sig=\(secret)",
            "SharedAccessSignature sr=a&sig=\(secret)&se=soon",
            "SharedAccessSignature sr=a&sig=\(secret)&sig=\(secret)&se=1",
            "SharedAccessSignature sr=a&sig=\(secret)&se=1&\(secret)=x",
            "SharedAccessSignature sr=a&\(secret)=\(secret)&se=1",
            "sr=a&sig=\(secret)&se=1", "SharedAccessSignature sr=a&sig=\(secret)&se=1&",
            "SharedAccessSignature sr=&sig=\(secret)&se=1",
        ]
    }

    /// Whether `text` holds the secret or any eight characters of it in a row.
    static func reveals(_ text: String, _ secret: String) -> Bool {
        let characters = Array(secret)
        return (0...(characters.count - 8)).contains { text.contains(String(characters[$0..<($0 + 8)])) }
    }

    @Test func connectionStringErrorsNeverRepeatASecret() {
        for _ in 0..<20 {
            let secret = Self.secret()
            for text in Self.connectionStrings(hiding: secret) {
                do {
                    let parsed = try ConnectionString(parsing: text)
                    #expect(!Self.reveals("\(parsed)", secret), "\(text)")
                } catch {
                    #expect(!Self.reveals("\(error)", secret), "\(text) → \(error)")
                }
            }
        }
    }

    @Test func sasTokenErrorsNeverRepeatASecret() {
        for _ in 0..<20 {
            let secret = Self.secret()
            for text in Self.tokens(hiding: secret) {
                do {
                    _ = try SASToken(parsing: text)
                } catch {
                    #expect(!Self.reveals("\(error)", secret), "\(text) → \(error)")
                }
            }
        }
    }
}
