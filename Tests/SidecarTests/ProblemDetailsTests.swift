import Foundation
import IoTHubDevice
import IoTHubProtocol
import Testing

@testable import Sidecar

@Suite struct ProblemDetailsTests {
    static let table: [(IoTHubError, Int, Int?)] = [
        (.credentialError("refused"), 502, nil),
        (.connectionFailedError("unreachable"), 503, 10),
        (.connectionDroppedError("lost"), 503, 10),
        (.noConnectionError("off"), 503, nil),
        (.operationTimeout("slow"), 504, nil),
        (.operationCancelled("stop"), 503, nil),
        (.serviceError(status: 404, message: "no twin"), 404, nil),
        (.serviceError(status: 429, message: "throttled", retryAfterSeconds: 7), 429, 7),
        (.serviceError(status: 429, message: "throttled"), 429, nil),
        (.serviceError(status: 99, message: "odd"), 502, nil),
        (.clientError("bug"), 500, nil),
        (.valueError(field: "body", reason: "is not valid JSON"), 400, nil),
        (.messageTooLarge(size: 300_000, limit: 262_144), 413, nil),
        (.topicTooLong(length: 65_600, limit: 65_535), 413, nil),
    ]

    @Test(arguments: table)
    func errorsMapAsTheArchitectureErrorTableSays(_ row: (IoTHubError, Int, Int?)) throws {
        let (error, status, retryAfter) = row
        let problem = ProblemDetails(error, retryAfterSeconds: 10)
        #expect(problem.status == status)
        #expect(problem.code == error.code)
        #expect(problem.retryAfterSeconds == retryAfter)
        #expect(problem.type == "urn:iothub-sidecar:problem:\(error.code)")
        let json = try JSONValue(parsing: problem.encoded())
        #expect(json["status"] == .integer(Int64(status)))
        #expect(json["code"] == .string(error.code))
        #expect(json["retryAfterSeconds"] == nil)
        #expect(!(json["detail"].map { "\($0)" } ?? "").contains(error.code + ":"))
    }

    @Test func outboxRefusalsMapToTheirStatusAndCode() {
        let full = ProblemDetails(OutboxError.full(bytes: 900, limit: 1000), inBatch: false, retryAfterSeconds: 10)
        #expect(full.status == 507 && full.code == "OutboxFull" && full.title == "The outbox is full")
        let disk = ProblemDetails(OutboxError.noSpace("ENOSPC"), inBatch: true, retryAfterSeconds: 10)
        #expect(disk.status == 507 && disk.code == "InsufficientStorage")
        let tooLarge = IoTHubError.messageTooLarge(size: 300_000, limit: 262_144)
        let single = ProblemDetails(OutboxError.invalid(index: 0, tooLarge), inBatch: false, retryAfterSeconds: 10)
        #expect(single == ProblemDetails(tooLarge, retryAfterSeconds: 10), "as the synchronous path answers")
        let entry = ProblemDetails(OutboxError.invalid(index: 3, tooLarge), inBatch: true, retryAfterSeconds: 10)
        #expect(
            entry.status == 400 && entry.code == "ValueError" && entry.field == "[3]"
                && entry.detail.hasPrefix("entry 3: "))
        let failed = ProblemDetails(OutboxError.storageFailed("EIO"), inBatch: false, retryAfterSeconds: 10)
        #expect(failed.status == 500 && failed.code == "ClientError")
    }
}
