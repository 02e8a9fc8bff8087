import Foundation
import Synchronization
import TandemLoop
import TandemTestSupport
import Testing

@Suite struct LoopGroupTests {
    /// A group of both loop kinds, so that every check runs on each.
    private func mixedGroup() -> TandemEventLoopGroup {
        TandemEventLoopGroup(loops: [EpollEventLoop(name: "group-epoll"), DispatchEventLoop(name: "group-dispatch"), EpollEventLoop(name: "group-epoll-2")])
    }

    @Test func offTheLoopsNextTakesEveryLoopInTurn() async throws {
        let group = mixedGroup()
        defer { group.shutdown() }
        #expect(group.current == nil, "the test's thread is none of the group's loops")
        let picked = (0..<9).map { _ in ObjectIdentifier(group.next()) }
        for loop in group.loops {
            #expect(picked.filter { $0 == ObjectIdentifier(loop) }.count == 3, "9 picks over 3 loops give each loop 3")
        }
        #expect(Set(picked[0..<3]).count == 3, "three picks in a row name three different loops")
    }

    @Test func onALoopNextAndCurrentNameThatLoop() async throws {
        let group = mixedGroup()
        defer { group.shutdown() }
        for (i, loop) in group.loops.enumerated() {
            let (next, current) = try await onLoop(loop) {
                ((0..<5).map { _ in ObjectIdentifier(group.next()) }, group.current.map { ObjectIdentifier($0) })
            }
            #expect(next.allSatisfy { $0 == ObjectIdentifier(loop) }, "loop \(i): every pick is the caller's own loop")
            #expect(current == ObjectIdentifier(loop))
        }
        // A loop outside the group is not mistaken for one of it.
        let stranger = EpollEventLoop(name: "not-in-group")
        defer { stranger.shutdown() }
        let fromStranger = try await onLoop(stranger) { (group.current == nil, Set((0..<6).map { _ in ObjectIdentifier(group.next()) }).count) }
        #expect(fromStranger.0)
        #expect(fromStranger.1 == 3, "from a loop outside the group, picks go round all three loops")
    }

    @Test func pickerWithSeveralResourcesPerLoopPrefersTheCallersLoopAndUsesEveryResource() async throws {
        let a = EpollEventLoop(name: "picker-a"), b = DispatchEventLoop(name: "picker-b")
        defer { a.shutdown(); b.shutdown() }
        // Four resources on two loops (a, b, a, b), as four Redis connections on a group of two.
        let picker = LoopPicker([a, b, a, b])
        #expect(Set(try await onLoop(a) { (0..<4).map { _ in picker.index() } }) == [0, 2], "on loop a: a's two resources, in turn")
        #expect(Set(try await onLoop(b) { (0..<4).map { _ in picker.index() } }) == [1, 3], "on loop b: b's two resources, in turn")
        // Off the loops, each thread keeps the loop it was given: the one its number names (threads are
        // numbered in turn as they first ask, so consecutive threads take consecutive loops). The
        // threads run one after another: the turn among a loop's resources is shared by every caller,
        // so threads calling at once could each meet the same resource every time.
        var fromThreads: [([Int], Int)] = []
        for _ in 0..<4 {
            fromThreads.append(try await onPlainThread { ((0..<4).map { _ in picker.index() }, CallerThread.number) })
        }
        for (indices, number) in fromThreads {
            let expected: Set<Int> = number % 2 == 0 ? [0, 2] : [1, 3]
            #expect(Set(indices) == expected, "thread \(number) uses both resources of loop \(number % 2): \(indices)")
        }
        #expect(Set(fromThreads.map(\.1)).count == 4, "every thread has a number of its own")
        // One loop with three resources (ASYNC_CONNECTIONS = 3 on a single loop): every call takes the next.
        let single = LoopPicker([a, a, a])
        #expect(Set((0..<6).map { _ in single.index() }) == [0, 1, 2])
    }

    @Test func groupAsAServiceShutsEveryLoopDown() async throws {
        let group = mixedGroup()
        await group.shutdownGracefully()
        for loop in group.loops {
            #expect(throws: TandemError.self) { try loop.execute {} }
        }
    }

    @Test func loopCountComesFromTheEnvironmentOrTheCores() throws {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        #expect(try EventLoops.loopCount(environment: [:]) == min(EventLoops.maximumDefaultLoops, max(1, cores)))
        #expect(try EventLoops.loopCount(environment: ["TANDEM_EVENT_LOOPS": "3"]) == 3)
        #expect(try EventLoops.loopCount(environment: ["TANDEM_EVENT_LOOPS": "256"]) == 256)
        for bad in ["0", "-1", "257", "two", "", "1.5"] {
            #expect(throws: EventLoopSettingError(name: "TANDEM_EVENT_LOOPS", value: bad, reason: "must be a whole number of loops from 1 to 256")) {
                try EventLoops.loopCount(environment: ["TANDEM_EVENT_LOOPS": bad])
            }
        }
    }

    @Test func defaultGroupStartsWithTheSharedLoop() throws {
        #expect(EventLoops.group.loops[0] === EventLoops.shared)
        #expect(EventLoops.group.count == (try EventLoops.loopCount(environment: ProcessInfo.processInfo.environment)))
    }
}
