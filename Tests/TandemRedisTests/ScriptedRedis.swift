import Foundation
import Synchronization
import TandemTestSupport

/// A Redis server on a loopback socket whose answers a test writes: each command (parsed from RESP)
/// goes to `answer` with the number of its connection, which says what to send back. Every
/// connection is served by a thread of its own; `events` records what was received (when it
/// arrived, before anything in the same read is answered) and sent, in order.
final class ScriptedRedis: Sendable {
    enum Answer: Sendable {
        /// Send these RESP bytes.
        case reply(String)
        /// Wait this many milliseconds, then send the bytes.
        case replyAfter(milliseconds: Int, String)
        /// Send nothing and close the connection.
        case hangUp
        /// Send nothing and keep reading.
        case silence
    }

    let listener: Int32
    let port: Int
    /// "recv NAME#connection" and "sent NAME#connection", in the order they happened.
    let events = Mutex<[String]>([])
    private let connections = Atomic<Int>(0)
    private let answer: @Sendable ([String], Int) -> Answer

    init(_ answer: @escaping @Sendable (_ command: [String], _ connection: Int) -> Answer) throws {
        self.answer = answer
        (listener, port) = try silentListener()
        let server = self
        Thread.detachNewThread { server.acceptLoop() }
    }

    func stop() { shutdown(listener, Int32(SHUT_RDWR)); close(listener) }

    /// The recorded events.
    var log: [String] { events.locked { $0 } }

    private func acceptLoop() {
        while true {
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { return }
            let n = connections.add(1, ordering: .relaxed).newValue
            var tv = timeval(tv_sec: 30, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let server = self
            Thread.detachNewThread { server.serve(fd, n) }
        }
    }

    private func serve(_ fd: Int32, _ n: Int) {
        defer { close(fd) }
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            // Everything that arrived is recorded as received before any of it is answered.
            var arrived: [[String]] = []
            while let (command, used) = ScriptedRedis.parse(buffer) {
                buffer.removeFirst(used)
                arrived.append(command)
                events.locked { $0.append("recv \(command.first?.uppercased() ?? "")#\(n)") }
            }
            for command in arrived {
                let name = command.first?.uppercased() ?? ""
                let bytes: String
                switch answer(command, n) {
                case .reply(let b): bytes = b
                case .replyAfter(let ms, let b):
                    usleep(UInt32(ms) * 1000)
                    bytes = b
                case .hangUp: return
                case .silence: continue
                }
                events.locked { $0.append("sent \(name)#\(n)") }
                _ = Array(bytes.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            let got = recv(fd, &chunk, chunk.count, 0)
            guard got > 0 else { return }
            buffer += chunk[0..<got]
        }
    }

    /// One RESP command (an array of bulk strings) from the front of `b`, and the bytes it took.
    static func parse(_ b: [UInt8]) -> ([String], Int)? {
        func line(_ from: Int) -> (String, Int)? {
            var i = from
            while i + 1 < b.count {
                if b[i] == 13 && b[i + 1] == 10 { return (String(decoding: b[from..<i], as: UTF8.self), i + 2) }
                i += 1
            }
            return nil
        }
        guard let (head, afterHead) = line(0), head.hasPrefix("*"), let count = Int(head.dropFirst()) else { return nil }
        var at = afterHead
        var args: [String] = []
        for _ in 0..<count {
            guard let (len, afterLen) = line(at), len.hasPrefix("$"), let n = Int(len.dropFirst()), b.count >= afterLen + n + 2 else { return nil }
            args.append(String(decoding: b[afterLen..<(afterLen + n)], as: UTF8.self))
            at = afterLen + n + 2
        }
        return (args, at)
    }

    /// A RESP bulk string.
    static func bulk(_ s: String) -> String { "$\(s.utf8.count)\r\n\(s)\r\n" }
    /// A RESP array of bulk strings.
    static func array(_ items: [String]) -> String { "*\(items.count)\r\n" + items.map(bulk).joined() }
}
