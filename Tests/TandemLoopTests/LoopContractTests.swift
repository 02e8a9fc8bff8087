import Foundation
import Synchronization
import TandemLoop
import TandemTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The two loops every contract test runs against.
enum LoopKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case epoll, dispatch
    var testDescription: String { rawValue }
    func make() -> any TandemEventLoop {
        switch self {
        case .epoll: return EpollEventLoop(name: "test-epoll")
        case .dispatch: return DispatchEventLoop(name: "test-dispatch")
        }
    }
}

/// Runs `body` on the loop thread and returns its result.
func onLoop<T: Sendable>(_ loop: any TandemEventLoop, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withLoopPromise(on: loop) { (p: LoopPromise<T>) in p.complete(Result { try body() }) }
}

/// A connected pair of non-blocking sockets, closed on deinit.
final class SocketPair: Sendable {
    let a: Int32
    let b: Int32
    init() {
        var fds: [Int32] = [0, 0]
        precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        a = fds[0]
        b = fds[1]
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
    }
    deinit {
        close(a)
        close(b)
    }
    func send(_ byte: UInt8 = 1) { var v = byte; _ = write(b, &v, 1) }
    func drainA() { var buf = [UInt8](repeating: 0, count: 4096); while read(a, &buf, 4096) > 0 {} }
}


/// Collects events from loop callbacks (any thread) for later checks.
final class Recorder<T: Sendable>: Sendable {
    private let items = Mutex<[T]>([])
    func add(_ t: T) { items.locked { $0.append(t) } }
    var all: [T] { items.locked { $0 } }
}


@Suite struct LoopContractTests {
    @Test func sharedLoopIsOneLoopUnderBothSpellings() async throws {
        let inContext: any TandemEventLoop = .shared
        #expect(inContext === EventLoops.shared)
        let ran = try await onLoop(inContext) { EventLoops.shared.inEventLoop }
        #expect(ran, "work given to `.shared` runs on EventLoops.shared's thread")
    }

    @Test func epollLoopThreadCarriesTheLoopNameInTheOS() async throws {
        // What top, perf and gdb show: the loop's name, cut to the 15 bytes Linux keeps.
        let loop = EpollEventLoop(name: "named-loop-with-a-long-name")
        defer { loop.shutdown() }
        let comm = try await onLoop(loop) { try String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8) }
        #expect(comm.trimmingCharacters(in: .newlines) == "named-loop-with")
    }

    @Test(arguments: LoopKind.allCases)
    func readReadinessIsLevelTriggeredUntilDrained(_ kind: LoopKind) async throws {
        let loop = kind.make()
        defer { loop.shutdown() }
        let pair = SocketPair()
        let fired = Recorder<IOEvents>()
        let id = try await onLoop(loop) { try loop.watch(pair.a, events: .read) { ev in fired.add(ev) } }
        try await Task.sleep(for: .milliseconds(30))
        #expect(fired.all.isEmpty, "no readiness before data arrives")
        pair.send()
        #expect(try await eventually { fired.all.count >= 3 }, "level-triggered: keeps firing while data is unread")
        #expect(fired.all.allSatisfy { $0.contains(.read) })
        try await onLoop(loop) { loop.unwatch(id); pair.drainA() }
        let count = fired.all.count
        pair.send()
        try await Task.sleep(for: .milliseconds(30))
        #expect(fired.all.count == count, "no callbacks after unwatch")
    }

    @Test(arguments: LoopKind.allCases)
    func peerThatHungUpStaysReadableUntilDrainedAndEOFSeen(_ kind: LoopKind) async throws {
        // A connection reset with data still unread (an upstream cut off mid-body): the reader takes
        // one small read per callback, as curl does, and must keep being called until it has read
        // every byte and seen the end, and keep being called after that until it unwatches.
        let loop = kind.make()
        defer { loop.shutdown() }
        let pair = SocketPair()
        let payload = [UInt8](repeating: 7, count: 20)
        #expect(write(pair.b, payload, payload.count) == payload.count)
        #expect(shutdown(pair.b, Int32(SHUT_RDWR)) == 0, "the peer hangs up both ways")
        let got = Box(Mutex<(bytes: Int, eof: Bool, callsAfterEOF: Int, events: [IOEvents])>((0, false, 0, [])))
        let id = try await onLoop(loop) {
            try loop.watch(pair.a, events: .read) { ev in
                var one: UInt8 = 0
                let n = read(pair.a, &one, 1)
                got.value.locked {
                    $0.events.append(ev)
                    if $0.eof { $0.callsAfterEOF += 1 }
                    if n == 1 { $0.bytes += 1 } else if n == 0 { $0.eof = true }
                }
            }
        }
        #expect(try await eventually(10) { got.value.locked { $0.eof && $0.callsAfterEOF >= 2 } },
                "every byte and the end were read, and the descriptor kept reporting readiness")
        let seen = got.value.locked { $0 }
        #expect(seen.bytes == payload.count)
        #expect(seen.events.allSatisfy { $0.contains(.read) })
        try await onLoop(loop) { loop.unwatch(id) }
        let calls = got.value.locked { $0.events.count }
        try await Task.sleep(for: .milliseconds(30))
        #expect(got.value.locked { $0.events.count } == calls, "no callbacks after unwatch")
    }

    @Test(arguments: LoopKind.allCases)
    func writeAndBothAndUpdate(_ kind: LoopKind) async throws {
        let loop = kind.make()
        defer { loop.shutdown() }
        let pair = SocketPair()
        let fired = Recorder<IOEvents>()
        let id = try await onLoop(loop) {
            try loop.watch(pair.a, events: [.read, .write]) { ev in fired.add(ev) }
        }
        #expect(try await eventually { fired.all.contains { $0.contains(.write) } }, "an empty socket buffer is writable")
        #expect(!fired.all.contains { $0.contains(.read) })
        pair.send()
        #expect(try await eventually { fired.all.contains { $0.contains(.read) } }, "read fires too when watching both")
        let n = try await onLoop(loop) { () -> Int in
            loop.updateWatch(id, events: .read)
            pair.drainA()
            return fired.all.count
        }
        pair.send()
        #expect(try await eventually { fired.all.count > n }, "read interest stays")
        try await Task.sleep(for: .milliseconds(20))
        #expect(!fired.all[n...].contains { $0.contains(.write) }, "no write readiness after write interest was dropped")
        try await onLoop(loop) { loop.unwatch(id) }
    }

    @Test(arguments: LoopKind.allCases)
    func watcherRemovedInsideItsOwnCallback(_ kind: LoopKind) async throws {
        let loop = kind.make()
        defer { loop.shutdown() }
        let pair = SocketPair()
        let fired = Recorder<Int>()
        let slot = Box(Mutex<WatchID?>(nil))
        try await onLoop(loop) {
            let id = try loop.watch(pair.a, events: .read) { _ in
                fired.add(1)
                if let id = slot.value.locked({ $0 }) { loop.unwatch(id) }
            }
            slot.value.locked { $0 = id }
        }
        pair.send()
        #expect(try await eventually { fired.all.count >= 1 })
        try await Task.sleep(for: .milliseconds(50))
        #expect(fired.all.count == 1, "the callback ran once and removed itself while data was still unread")
        #expect(try await onLoop(loop) { (try? loop.watch(pair.a, events: .read) { _ in }) != nil }, "the fd can be watched again")
    }

    @Test(arguments: LoopKind.allCases)
    func descriptorClosedWithoutUnwatchCanBeReplacedButNotWatchedTwice(_ kind: LoopKind) async throws {
        // Libraries close descriptors behind the loop's back (curl's resolver pipe): a new descriptor
        // that gets the same number must be watchable, and must get its own events.
        let loop = kind.make()
        defer { loop.shutdown() }
        var oldFDs: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &oldFDs) == 0)
        defer { close(oldFDs[1]) }
        let number = oldFDs[0]
        let oldFired = Recorder<Int>()
        try await onLoop(loop) { _ = try loop.watch(number, events: .read) { _ in oldFired.add(1) } }
        let second = try await onLoop(loop) { () -> Bool in (try? loop.watch(number, events: .read) { _ in }) != nil }
        #expect(!second, "the same open descriptor cannot be watched twice")
        // Close the watched end without unwatch and put a new socket under the same number, in one
        // step (dup2), so that no other test running meanwhile can take the number.
        let fresh = SocketPair()
        #expect(dup2(fresh.a, number) == number)
        defer { close(number) }
        let newFired = Recorder<Int>()
        try await onLoop(loop) { _ = try loop.watch(number, events: .read) { _ in newFired.add(1) } }
        _ = send(oldFDs[1], [UInt8(1)], 1, Int32(MSG_NOSIGNAL))  // the old peer: nobody may hear it
        fresh.send()
        #expect(try await eventually { newFired.all.count >= 1 }, "the new descriptor's watch fires")
        #expect(oldFired.all.isEmpty, "the dead watch never fires")
        try await onLoop(loop) { var buf = [UInt8](repeating: 0, count: 16); _ = read(number, &buf, 16) }
        try await Task.sleep(for: .milliseconds(20))
    }

    @Test(arguments: LoopKind.allCases)
    func timersFireInDeadlineOrderAndCancelledNever(_ kind: LoopKind) async throws {
        let loop = kind.make()
        defer { loop.shutdown() }
        let order = Recorder<Int>()
        // Each timer's deadline is known only to lie between the clock read just before its call
        // and the one just after it (a stalled thread, as under ThreadSanitizer, can come between
        // either read and the loop's own), so the verdict is: no timer fired before another whose
        // whole window comes earlier than its own.
        let windows = Recorder<(ms: Int, from: ContinuousClock.Instant, to: ContinuousClock.Instant)>()
        try await onLoop(loop) {
            func scheduled(_ ms: Int) {
                let from = ContinuousClock.now + .milliseconds(ms)
                loop.schedule(after: .milliseconds(ms)) { order.add(ms) }
                windows.add((ms, from, ContinuousClock.now + .milliseconds(ms)))
            }
            scheduled(60)
            scheduled(20)
            let c = loop.schedule(after: .milliseconds(30)) { order.add(-30) }
            scheduled(40)
            scheduled(0)
            loop.cancel(c)
            loop.cancel(TimerID(raw: 999_999))  // unknown ids are ignored
        }
        #expect(try await eventually { order.all.count == 4 })
        try await Task.sleep(for: .milliseconds(50))
        let fired = order.all
        let window = Dictionary(uniqueKeysWithValues: windows.all.map { ($0.ms, ($0.from, $0.to)) })
        #expect(Set(fired) == [0, 20, 40, 60], "\(fired)")
        for (i, earlier) in fired.enumerated() {
            for later in fired[(i + 1)...] {
                guard let a = window[earlier], let b = window[later] else { continue }
                #expect(!(b.1 < a.0), "\(later) ms was due before \(earlier) ms but fired after it: \(fired)")
            }
        }
        #expect(!order.all.contains(-30), "a cancelled timer never fires")
    }

    @Test(arguments: LoopKind.allCases)
    func timerNeverFiresEarly(_ kind: LoopKind) async throws {
        let loop = kind.make()
        defer { loop.shutdown() }
        let start = ContinuousClock.now
        let elapsed = try await withLoopPromise(on: loop) { (p: LoopPromise<Duration>) in
            loop.schedule(after: .milliseconds(25)) { p.succeed(ContinuousClock.now - start) }
        }
        #expect(elapsed >= .milliseconds(25))
    }

    @Test(arguments: LoopKind.allCases)
    func hundredThousandSubmissionsFromFourThreadsRunOnceInOrder(_ kind: LoopKind) async throws {
        let loop = kind.make()
        defer { loop.shutdown() }
        let perThread = 25_000
        // Touched only on the loop thread; the Mutex is uncontended and satisfies the checker.
        let seen = Box(Mutex<[[Int]]>(Array(repeating: [], count: 4)))
        let wrongThread = Box(Atomic<Int>(0))
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<4 {
                group.addTask {
                    try? await Bridge.offload {
                        for i in 0..<perThread {
                            try loop.execute {
                                if !loop.inEventLoop { wrongThread.value.add(1, ordering: .relaxed) }
                                seen.value.locked { $0[t].append(i) }
                            }
                        }
                    }
                }
            }
        }
        #expect(try await eventually { seen.value.locked { $0.map(\.count).reduce(0, +) } == 4 * perThread })
        let all = seen.value.locked { $0 }
        for t in 0..<4 { #expect(all[t] == Array(0..<perThread), "thread \(t): each once, in order") }
        #expect(wrongThread.value.load(ordering: .relaxed) == 0)
    }

    @Test(arguments: LoopKind.allCases)
    func shutdownRunsSubmittedWorkDropsTimersAndRefusesLater(_ kind: LoopKind) async throws {
        let loop = kind.make()
        let ran = Recorder<String>()
        // A day: the timer can never come due before the shutdown below, however loaded the machine.
        try await onLoop(loop) { loop.schedule(after: .seconds(86_400)) { ran.add("timer") } }
        for i in 0..<100 { try loop.execute { ran.add("job\(i)") } }
        try await Bridge.offload { loop.shutdown() }
        #expect(ran.all.count == 100, "work submitted before shutdown ran")
        #expect(!ran.all.contains("timer"), "pending timer dropped")
        #expect(throws: TandemError.self) { try loop.execute {} }
        do {
            try loop.execute {}
        } catch let e as TandemError {
            #expect(e.description.contains("shut down"))
        }
        try await Bridge.offload { loop.shutdown() }  // a second shutdown returns
    }

    @Test(arguments: LoopKind.allCases)
    func inEventLoopAndGuard(_ kind: LoopKind) async throws {
        let loop = kind.make()
        defer { loop.shutdown() }
        #expect(!loop.inEventLoop)
        let (inside, refusal) = try await onLoop(loop) { () -> (Bool, TandemError?) in
            do {
                try AsyncSafety.checkBlockingCall("test op", policy: .allow)
                return (loop.inEventLoop, nil)
            } catch let e as TandemError {
                return (loop.inEventLoop, e)
            }
        }
        #expect(inside)
        #expect(refusal?.withoutSite == .blockingCallOnEventLoop(operation: "test op"), "refused on the loop thread even with .allow")
    }
}
