import Foundation
import ServiceLifecycle
import Synchronization

/// A fixed set of event loops, each on its own thread, so that a process's socket work spreads over
/// several cores instead of one.
///
/// Whatever is given a group instead of a single loop keeps one resource per loop: a Redis cache
/// opens an async connection per server on each loop (so `ASYNC_CONNECTIONS` defaults to the group's
/// size), an `UpstreamClient` keeps a curl multi handle per loop. A call made on one of the group's
/// loops (from an actor or task pinned to it) is served by that loop; any other call by the loop its
/// thread was given (threads of the cooperative pool are spread over the loops in turn, each keeping
/// its loop, so that a loop takes a thread's calls in the batches it made them). The blocking faces
/// do not use loops and are unchanged.
///
/// The process-wide default is ``EventLoops/group``: one loop per core, at most
/// ``EventLoops/maximumDefaultLoops``, whose first loop is ``EventLoops/shared``.
public final class TandemEventLoopGroup: Sendable {
    /// The loops, in a fixed order.
    public let loops: [any TandemEventLoop]
    private let picker: LoopPicker
    private let turn = Atomic<Int>(0)

    /// Starts `count` ``EpollEventLoop``s named `name-0`, `name-1`, ...
    /// - Precondition: `count` is at least 1.
    public convenience init(count: Int, name: String = "tandem-loop") {
        precondition(count >= 1, "a loop group needs at least one loop (got \(count))")
        self.init(loops: (0..<count).map { EpollEventLoop(name: "\(name)-\($0)") })
    }

    /// Groups loops that already exist (any mix of ``EpollEventLoop`` and ``DispatchEventLoop``).
    /// - Precondition: `loops` is not empty and names no loop twice.
    public init(loops: [any TandemEventLoop]) {
        precondition(!loops.isEmpty, "a loop group needs at least one loop")
        precondition(Set(loops.map { ObjectIdentifier($0) }).count == loops.count, "a loop group names a loop twice")
        self.loops = loops
        picker = LoopPicker(loops)
    }

    /// The number of loops.
    public var count: Int { loops.count }

    /// The loop the caller runs on, when it is one of this group's; otherwise the next loop in turn.
    public func next() -> any TandemEventLoop {
        if let i = picker.currentIndex() { return loops[i] }
        return loops[turn.add(1, ordering: .relaxed).newValue % loops.count]
    }

    /// The group's loop the caller runs on, or nil off the group's loops.
    public var current: (any TandemEventLoop)? { picker.currentIndex().map { loops[$0] } }

    /// Shuts every loop down (see ``TandemEventLoop/shutdown()``). Must not be called on one of them.
    public func shutdown() {
        for loop in loops { loop.shutdown() }
    }

    /// ``shutdown()`` from async code, without blocking a cooperative thread.
    public func shutdownGracefully() async {
        for loop in loops { await loop.shutdownGracefully() }
    }
}

extension TandemEventLoopGroup: Service {
    /// Runs until the service group's graceful shutdown (or the task's cancellation), then shuts every
    /// loop down; see ``EpollEventLoop/run()``. List it first in a `ServiceGroup`. ``EventLoops/group``
    /// is left running: it belongs to the process, and another application in it may still use it.
    public func run() async throws {
        try? await gracefulShutdown()
        if EventLoops.belongsToProcess(self) { return }
        await shutdownGracefully()
    }
}

/// Chooses among per-loop resources (a Redis node's connections, a client's curl multi handles): the
/// loop is the caller's own when the caller runs on one of them, else the one its thread was given
/// (see ``index()``); among several resources on that loop, each call takes the next in turn. Two
/// thread-local reads and a short scan; no lock.
package final class LoopPicker: Sendable {
    /// The distinct loops' identities (`LoopThread.current` on their threads), in order of first appearance.
    private let identities: [UInt]
    /// For each distinct loop, the indices of the resources on it.
    private let resourcesOnLoop: [[Int]]
    private let resourceCount: Int
    private let turn = Atomic<Int>(0)

    /// A picker over resources on `loops` (one entry per resource; a loop may carry several).
    package init(_ loops: [any TandemEventLoop]) {
        var ids: [UInt] = []
        var onLoop: [[Int]] = []
        for (i, loop) in loops.enumerated() {
            let id = UInt(bitPattern: ObjectIdentifier(loop))
            if let slot = ids.firstIndex(of: id) {
                onLoop[slot].append(i)
            } else {
                ids.append(id)
                onLoop.append([i])
            }
        }
        identities = ids
        resourcesOnLoop = onLoop
        resourceCount = loops.count
    }

    /// Which of the distinct loops (in order of first appearance) the caller runs on, or nil.
    package func currentIndex() -> Int? {
        guard let current = LoopThread.current else { return nil }
        return identities.firstIndex(of: UInt(bitPattern: current))
    }

    /// The resource for the next call. Its loop: the caller's, when it runs on one of them; off the
    /// loops, the one the calling thread was given the first time it asked (threads are numbered in
    /// turn as they first ask), so that each thread of the cooperative pool feeds one loop: a loop then
    /// takes a thread's calls in the batches that thread submitted them in, and two threads do not
    /// contend for one loop's queue. Several resources on that loop are taken in turn, call by call.
    package func index() -> Int {
        if resourceCount == 1 { return 0 }
        let slot = identities.count == 1 ? 0 : (currentIndex() ?? CallerThread.number % identities.count)
        let candidates = resourcesOnLoop[slot]
        return candidates.count == 1 ? candidates[0] : candidates[turn.add(1, ordering: .relaxed).newValue % candidates.count]
    }
}

/// Numbers threads in the order they first ask, for ``LoopPicker``.
package enum CallerThread {
    private static let slot = ThreadSlot()
    private static let next = Atomic<Int>(0)

    /// This thread's number (stored as number + 1, so that a nil slot means "not numbered yet").
    package static var number: Int {
        if let stored = slot.value { return Int(bitPattern: stored) - 1 }
        let n = next.add(1, ordering: .relaxed).oldValue
        slot.set(UnsafeMutableRawPointer(bitPattern: n + 1))
        return n
    }
}
