import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What a TLS client offered in its ClientHello.
struct ClientHello: Sendable, Equatable {
    /// The cipher suites offered (IANA numbers), without the renegotiation signal and GREASE values.
    var cipherSuites: Set<UInt16>
    /// The protocol versions offered: the `supported_versions` extension's, or the legacy
    /// version field alone when the extension is absent.
    var versions: Set<UInt16>

    static let tls12: UInt16 = 0x0303
    static let tls13: UInt16 = 0x0304

    /// Parses a TLS record holding a ClientHello; nil when `record` is not one (yet).
    init?(record bytes: [UInt8]) {
        var reader = ByteReader(bytes)
        // Record: content type 22 (handshake), version, length; handshake: type 1, length.
        guard reader.byte() == 22, reader.skip(2), let recordLength = reader.uint16(),
            bytes.count >= 5 + Int(recordLength), reader.byte() == 1, reader.skip(3)
        else { return nil }
        guard let legacyVersion = reader.uint16(), reader.skip(32), let sessionLength = reader.byte(),
            reader.skip(Int(sessionLength)), let suitesLength = reader.uint16()
        else { return nil }
        var suites = Set<UInt16>()
        for _ in 0..<(Int(suitesLength) / 2) {
            guard let suite = reader.uint16() else { return nil }
            let grease = suite & 0x0F0F == 0x0A0A && suite >> 8 == suite & 0xFF
            if suite != 0x00FF, !grease { suites.insert(suite) }
        }
        guard let compressionLength = reader.byte(), reader.skip(Int(compressionLength)) else { return nil }
        var versions: Set<UInt16> = [legacyVersion]
        if let extensionsLength = reader.uint16() {
            var extensions = ByteReader(Array(reader.rest.prefix(Int(extensionsLength))))
            while let type = extensions.uint16(), let length = extensions.uint16() {
                let body = Array(extensions.rest.prefix(Int(length)))
                _ = extensions.skip(Int(length))
                guard type == 0x002B, let count = body.first else { continue }
                var list = ByteReader(Array(body.dropFirst().prefix(Int(count))))
                versions = []
                while let version = list.uint16() {
                    if version & 0x0F0F != 0x0A0A { versions.insert(version) }
                }
            }
        }
        self.cipherSuites = suites
        self.versions = versions
    }
}

/// A server that reads each client's ClientHello, records it and hangs up: it shows what a
/// client's TLS stack offers without finishing a handshake.
final class ClientHelloRecorder: Sendable {
    private let channel: any Channel
    private let hellos: NIOLockedValueBox<[ClientHello]>
    let port: Int

    /// The ClientHellos received, in order.
    var received: [ClientHello] { hellos.withLockedValue { $0 } }

    private init(channel: any Channel, hellos: NIOLockedValueBox<[ClientHello]>) {
        self.channel = channel
        self.hellos = hellos
        self.port = channel.localAddress?.port ?? 0
    }

    static func start() async throws -> ClientHelloRecorder {
        let hellos = NIOLockedValueBox<[ClientHello]>([])
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(HelloReader(hellos: hellos))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return ClientHelloRecorder(channel: channel, hellos: hellos)
    }

    func stop() async {
        try? await channel.close()
    }
}

private final class HelloReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let hellos: NIOLockedValueBox<[ClientHello]>
    private var bytes: [UInt8] = []

    init(hellos: NIOLockedValueBox<[ClientHello]>) {
        self.hellos = hellos
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        bytes += Array(buffer: unwrapInboundIn(data))
        guard let hello = ClientHello(record: bytes) else {
            if bytes.count > 65_536 { context.close(promise: nil) }
            return
        }
        hellos.withLockedValue { $0.append(hello) }
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Big-endian reads over a byte array that report running out instead of trapping.
private struct ByteReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    var rest: ArraySlice<UInt8> { bytes[min(offset, bytes.count)...] }

    mutating func byte() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func uint16() -> UInt16? {
        guard offset + 2 <= bytes.count else { return nil }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func skip(_ count: Int) -> Bool {
        guard offset + count <= bytes.count else { return false }
        offset += count
        return true
    }
}
