import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import X509

/// A TLS server with a certificate chain of the test's choosing that requires a client
/// certificate from `clientCA`, and answers just enough for the client to finish: an MQTT
/// CONNACK to a CONNECT, or an HTTP 200 with a blob's storage information to any request. It
/// records the subject of each client certificate it accepted.
final class ClientCertificateServer: Sendable {
    enum Speech: Sendable {
        case mqtt
        case https
    }

    private let channel: any Channel
    private let subjects: NIOLockedValueBox<[String]>
    let port: Int

    /// The subjects of the client certificates presented so far.
    var clientSubjects: [String] { subjects.withLockedValue { $0 } }

    private init(channel: any Channel, subjects: NIOLockedValueBox<[String]>) {
        self.channel = channel
        self.subjects = subjects
        self.port = channel.localAddress?.port ?? 0
    }

    static func start(
        speaking protocolKind: Speech, certificateChainPEM: String, privateKeyPEM: String, clientCA: String
    ) async throws -> ClientCertificateServer {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(certificateChainPEM.utf8)).map {
                .certificate($0)
            },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem)))
        configuration.certificateVerification = .noHostnameVerification
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(clientCA.utf8)))
        let context = try NIOSSLContext(configuration: configuration)
        let subjects = NIOLockedValueBox<[String]>([])
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try child.pipeline.syncOperations.addHandler(
                        Responder(protocolKind: protocolKind, subjects: subjects))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return ClientCertificateServer(channel: channel, subjects: subjects)
    }

    func stop() async {
        try? await channel.close()
    }
}

private final class Responder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let protocolKind: ClientCertificateServer.Speech
    private let subjects: NIOLockedValueBox<[String]>
    private var received: [UInt8] = []
    private var answered = false

    init(protocolKind: ClientCertificateServer.Speech, subjects: NIOLockedValueBox<[String]>) {
        self.protocolKind = protocolKind
        self.subjects = subjects
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += Array(buffer: unwrapInboundIn(data))
        guard !answered else { return }
        if let der = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate?
            .toDERBytes(),
            let certificate = try? Certificate(derEncoded: der)
        {
            subjects.withLockedValue { $0.append("\(certificate.subject)") }
        }
        switch protocolKind {
        case .mqtt:
            // CONNECT (0x10) → CONNACK, session not present, accepted.
            guard received.first == 0x10 else { return }
            answered = true
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: [0x20, 0x02, 0x00, 0x00])), promise: nil)
        case .https:
            guard let end = received.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let head = String(decoding: received[..<end.lowerBound], as: UTF8.self).lowercased()
            let length =
                head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
            guard received.count - end.upperBound >= length else { return }
            answered = true
            let body =
                #"{"correlationId":"c1","hostName":"127.0.0.1","containerName":"c","blobName":"dev1/rsa.txt","sasToken":"?sv=1"}"#
            let response =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response)), promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
