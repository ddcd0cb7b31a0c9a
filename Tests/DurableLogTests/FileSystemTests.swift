import Foundation
import Testing

@testable import DurableLog

/// The path arithmetic the log does without Foundation's `NSString`.
@Suite struct FileSystemTests {
    @Test(arguments: [
        ("/a/b", "/a"), ("/a/b/", "/a"), ("/a", "/"), ("/", "/"), ("a/b", "a"), ("a", ""), ("", ""),
    ])
    func parentDirectoryDropsTheLastComponent(path: String, parent: String) {
        #expect(FileSystem.parentDirectory(of: path) == parent)
    }

    @Test func lastComponentIsWhatFollowsTheLastSlash() {
        #expect(FileSystem.lastComponent(of: "/state/outbox/00000000000000000001.log") == "00000000000000000001.log")
        #expect(FileSystem.lastComponent(of: "segment.log") == "segment.log")
        #expect(FileSystem.lastComponent(of: "/a/b/") == "b")
    }

    @Test(arguments: [UInt64(0), 1, 42, 1_000_000_007, UInt64.max])
    func aMarkIsTwentyDigitsAndANewline(sequence: UInt64) {
        let text = WatermarkFile.fixedWidth(sequence)
        #expect(text.count == 21 && text.last == UInt8(ascii: "\n"))
        #expect(UInt64(String(decoding: text.dropLast(), as: UTF8.self)) == sequence)
    }

    @Test func theMarkIsWrittenInPlaceAndReadBack() throws {
        let scratch = ScratchDirectory()
        try FileManager.default.createDirectory(atPath: scratch.path, withIntermediateDirectories: true)
        let path = scratch.path + "/discarded"
        #expect(WatermarkFile.read(directory: scratch.path) == 0, "none yet")
        // What earlier versions wrote: the number as it is, longer than some marks to come.
        try Data("123456789012345678901234\n".utf8).write(to: URL(fileURLWithPath: path))
        #expect(WatermarkFile.read(directory: scratch.path) == 0, "not a number: read as nothing consumed")
        try Data("12345\n".utf8).write(to: URL(fileURLWithPath: path))
        #expect(WatermarkFile.read(directory: scratch.path) == 12_345)
        let mark = WatermarkFile(directory: scratch.path)
        #expect(mark.write({ 7 }, sync: false))
        #expect(WatermarkFile.read(directory: scratch.path) == 7)
        #expect(mark.write({ 1_000 }, sync: true))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(WatermarkFile.fixedWidth(1_000)))
        #expect(WatermarkFile.read(directory: scratch.path) == 1_000)
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: scratch.path) == ["discarded"], "no temporary files")
        // A damaged, longer file: cut to one mark's width when it is opened.
        try Data("123456789012345678901234567890\n".utf8).write(to: URL(fileURLWithPath: path))
        #expect(WatermarkFile(directory: scratch.path).write({ 9 }, sync: false))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(WatermarkFile.fixedWidth(9)))
    }
}
