import Dispatch
import Foundation
import Synchronization

/// The event-loop contract on a serial `DispatchQueue`, with `DispatchSource` read/write sources and
/// timers. It proves the loop is pluggable: the contract tests, and the backend and HTTP tests, run
/// against both loops.
public final class DispatchEventLoop: TandemEventLoop, EventLoopStatisticsReporting, @unchecked Sendable {
    // Why @unchecked Sendable is safe: `watchers`, `timers` and `nextID` are only touched by blocks
    // running on `queue` (a serial queue): every method that touches them is loop-thread-only and checks
    // `inEventLoop`. `state` is a Mutex; `queue` and `name` are immutable.

    /// The loop's name (queue label, errors).
    public let name: String
    /// The serial queue the loop runs on.
    public let queue: DispatchQueue
    private let key = DispatchSpecificKey<UInt8>()
    private let state = Mutex(false)  // shut down?

    /// A duplicate of a watched descriptor, owned by its dispatch sources and closed when the last of
    /// them has finished cancelling. The caller may close its own descriptor right after `unwatch`
    /// without racing a source that is still being torn down (or a new descriptor reusing the number).
    private final class DupFD: Sendable {
        let fd: Int32
        init(_ fd: Int32) { self.fd = dup(fd) }
        deinit { if fd >= 0 { close(fd) } }
    }

    private struct Watcher {
        var fd: Int32
        var dupFD: DupFD
        var events: IOEvents
        var callback: @Sendable (IOEvents) -> Void
        var read: (any DispatchSourceRead)?
        var write: (any DispatchSourceWrite)?
        /// The descriptor hung up (EPOLLHUP). libdispatch reports a hang-up once, then drops the
        /// descriptor from its epoll set for good: from here on this loop re-delivers readiness
        /// itself, once per queue turn, for as long as the watch lasts (a hung-up descriptor stays
        /// readable and writable forever, which is what level-triggered epoll would keep saying).
        var hungUp = false
        /// A re-delivery of a hung-up watch is queued.
        var redeliveryQueued = false
    }
    private var watchers: [UInt64: Watcher] = [:]
    private var timers: [UInt64: DispatchWorkItem] = [:]
    private var nextID: UInt64 = 1
    private var shutdownHooks = ShutdownHooks()

    /// Creates a loop on a new serial queue (or on `queue`, which must be serial).
    public init(name: String = "tandem-dispatch-loop", queue: DispatchQueue? = nil) {
        self.name = name
        self.queue = queue ?? DispatchQueue(label: name)
        self.queue.setSpecific(key: key, value: 1)
    }

    private var identity: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    /// True while running a block of this loop's queue.
    public var inEventLoop: Bool { DispatchQueue.getSpecific(key: key) == 1 }

    /// Runs `body` as loop work: marks the thread so that the async-safety guard recognises it.
    @inline(__always)
    private func onLoop(_ body: () -> Void) {
        let previous = LoopThread.current
        LoopThread.set(identity)
        let start = monotonicNanos()
        body()
        counters.add(tasks: 1, busySince: start, now: monotonicNanos())
        LoopThread.set(previous)
    }

    private let counters = LoopCounters()

    /// The work run on this loop's queue and the time it took; see ``EventLoopStatistics``.
    public var statistics: EventLoopStatistics { counters.snapshot }

    /// Runs `work` on the queue; throws ``TandemError/loopShutDown(loop:)`` after ``shutdown()``.
    public func execute(_ work: @escaping @Sendable () -> Void) throws {
        if state.locked({ $0 }) { throw TandemError.loopShutDown(loop: name) }
        queue.async { [self] in onLoop(work) }
    }

    /// Watches `fd` with dispatch sources (level-triggered: they fire while data is pending).
    public func watch(_ fd: Int32, events: IOEvents, callback: @escaping @Sendable (IOEvents) -> Void) throws -> WatchID {
        precondition(inEventLoop, "watch must be called on the loop")
        if let (oldID, old) = watchers.first(where: { $0.value.fd == fd }) {
            // Same open file behind both descriptors: a real second watch. Otherwise the old watch's
            // descriptor was closed without `unwatch` and its number reused: that watch is dead.
            guard !DispatchEventLoop.sameFile(fd, old.dupFD.fd) else {
                throw TandemError.system(operation: "watch fd \(fd): already watched", errno: EEXIST)
            }
            unwatch(WatchID(raw: oldID))
        }
        let id = nextID
        nextID += 1
        let d = DupFD(fd)
        if d.fd < 0 { throw TandemError.system(operation: "dup(fd \(fd))", errno: Errno.current.code) }
        watchers[id] = Watcher(fd: fd, dupFD: d, events: [], callback: callback)
        updateWatch(WatchID(raw: id), events: events)
        return WatchID(raw: id)
    }

    private static func sameFile(_ a: Int32, _ b: Int32) -> Bool {
        var sa = stat()
        var sb = stat()
        guard fstat(a, &sa) == 0, fstat(b, &sb) == 0 else { return false }
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }

    /// Changes a watch's interest by creating or cancelling its sources.
    public func updateWatch(_ id: WatchID, events: IOEvents) {
        precondition(inEventLoop, "updateWatch must be called on the loop")
        guard var w = watchers[id.raw] else { return }
        if w.hungUp {
            // New sources would never fire (libdispatch no longer polls the descriptor); the
            // re-delivery follows the new interest.
            w.events = events
            watchers[id.raw] = w
            queueRedelivery(id.raw)
            return
        }
        if events.contains(.read), w.read == nil {
            let s = DispatchSource.makeReadSource(fileDescriptor: w.dupFD.fd, queue: queue)
            s.setEventHandler { [self] in fire(id.raw, .read) }
            s.setCancelHandler { [d = w.dupFD] in _ = d }
            s.resume()
            w.read = s
        } else if !events.contains(.read), let s = w.read {
            s.cancel()
            w.read = nil
        }
        if events.contains(.write), w.write == nil {
            let s = DispatchSource.makeWriteSource(fileDescriptor: w.dupFD.fd, queue: queue)
            s.setEventHandler { [self] in fire(id.raw, .write) }
            s.setCancelHandler { [d = w.dupFD] in _ = d }
            s.resume()
            w.write = s
        } else if !events.contains(.write), let s = w.write {
            s.cancel()
            w.write = nil
        }
        w.events = events
        watchers[id.raw] = w
    }

    private func fire(_ id: UInt64, _ event: IOEvents) {
        guard var w = watchers[id], !w.hungUp, w.events.contains(event) else { return }
        // A read event with nothing queued is an end of stream or an error; a write event may come
        // with a hang-up. Either way, ask the kernel whether the descriptor hung up: if it did, this
        // is the last event libdispatch delivers for it.
        let nothingQueued = event == .read && (w.read?.data ?? 1) == 0
        if (nothingQueued || event == .write) && DispatchEventLoop.hasHungUp(w.dupFD.fd) {
            w.hungUp = true
            w.read?.cancel()
            w.write?.cancel()
            w.read = nil
            w.write = nil
            watchers[id] = w
            redeliverHangUp(id)
            return
        }
        onLoop { w.callback(event) }
    }

    private static func hasHungUp(_ fd: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 1 && p.revents & Int16(POLLHUP | POLLERR) != 0
    }

    /// Calls a hung-up watch's callback with its interest (plus `.error`), and queues the next call
    /// for the next turn, until the watch is removed or wants nothing.
    private func redeliverHangUp(_ id: UInt64) {
        guard var w = watchers[id], w.hungUp else { return }
        w.redeliveryQueued = false
        watchers[id] = w
        guard !w.events.isEmpty else { return }
        onLoop { w.callback(w.events.union(.error)) }
        queueRedelivery(id)
    }

    /// Queues one re-delivery for a hung-up watch (never calls back from inside the caller).
    private func queueRedelivery(_ id: UInt64) {
        guard var w = watchers[id], w.hungUp, !w.redeliveryQueued, !w.events.isEmpty else { return }
        w.redeliveryQueued = true
        watchers[id] = w
        queue.async { [self] in redeliverHangUp(id) }
    }

    /// Stops watching: cancels the sources. Safe inside the watch's own callback.
    public func unwatch(_ id: WatchID) {
        precondition(inEventLoop, "unwatch must be called on the loop")
        guard let w = watchers.removeValue(forKey: id.raw) else { return }
        w.read?.cancel()
        w.write?.cancel()
    }

    /// Schedules a one-shot timer on the queue.
    @discardableResult
    public func schedule(after delay: Duration, _ callback: @escaping @Sendable () -> Void) -> TimerID {
        precondition(inEventLoop, "schedule must be called on the loop")
        let id = nextID
        nextID += 1
        let item = DispatchWorkItem { [self] in
            guard timers.removeValue(forKey: id) != nil else { return }
            onLoop(callback)
        }
        timers[id] = item
        queue.asyncAfter(deadline: .now() + .nanoseconds(Int(min(delay.clampedNanoseconds, UInt64(Int.max)))), execute: item)
        return TimerID(raw: id)
    }

    /// Cancels a timer: it never fires.
    public func cancel(_ id: TimerID) {
        precondition(inEventLoop, "cancel must be called on the loop")
        timers.removeValue(forKey: id.raw)?.cancel()
    }

    /// Registers a shutdown hook; see ``TandemEventLoop/onShutdown(_:)``.
    @discardableResult
    public func onShutdown(_ hook: @escaping @Sendable () -> Void) -> ShutdownHookID {
        precondition(inEventLoop, "onShutdown must be called on the loop")
        nextID += 1
        return shutdownHooks.add(nextID - 1, hook)
    }

    /// Forgets a shutdown hook; see ``TandemEventLoop/removeShutdownHook(_:)``.
    public func removeShutdownHook(_ id: ShutdownHookID) {
        precondition(inEventLoop, "removeShutdownHook must be called on the loop")
        shutdownHooks.remove(id)
    }

    /// Refuses new work, runs the shutdown hooks, cancels timers and sources, and waits for the queue
    /// to finish what it has.
    public func shutdown() {
        precondition(!inEventLoop, "shutdown must not be called on the loop")
        let first = state.locked { s -> Bool in
            defer { s = true }
            return !s
        }
        guard first else { return }
        queue.sync { [self] in
            onLoop { for hook in shutdownHooks.takeAll() { hook() } }
            for (_, t) in timers { t.cancel() }
            timers.removeAll()
            for (_, w) in watchers {
                w.read?.cancel()
                w.write?.cancel()
            }
            watchers.removeAll()
        }
    }
}

extension DispatchEventLoop: SerialExecutor, TaskExecutor {
    /// Runs a Swift job on the queue.
    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        queue.async { [self] in
            onLoop { unowned.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor()) }
        }
    }

    /// This loop as an unowned serial executor.
    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Traps unless called on the loop.
    public func checkIsolated() {
        precondition(inEventLoop, "not on event loop '\(name)'")
    }
}
