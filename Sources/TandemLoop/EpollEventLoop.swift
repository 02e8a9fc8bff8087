import CTandemSys
import Dispatch
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A unit of work submitted to a loop: a closure, or a Swift job when the loop acts as an executor.
enum LoopJob: Sendable {
    case closure(@Sendable () -> Void)
    case job(UnownedJob)
}

/// The default event loop: its own thread, level-triggered epoll, an eventfd for wake-ups, a timer
/// heap, and a submission queue drained once per turn, so everything submitted while the loop was busy
/// runs in one batch (which is what gives Redis commands free pipelining).
///
/// It is also a `SerialExecutor` and a `TaskExecutor`: an actor can pin itself to the loop
/// (`nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }`).
public final class EpollEventLoop: TandemEventLoop, EventLoopStatisticsReporting, @unchecked Sendable {
    // Why @unchecked Sendable is safe: the mutable loop state (`watchers`, `fdWatches`, `timers`,
    // `heap`, `nextID`) is only touched on the loop thread. Every method that touches it is documented
    // as loop-thread-only and checks `inEventLoop` with a precondition, and `runLoop()` runs on that one
    // thread. What other threads touch is `inbox` (a Mutex), `finished` (a semaphore) and immutable
    // descriptors and names.

    /// The loop's name (thread name, errors).
    public let name: String
    private let epfd: Int32
    private let wakeFD: Int32
    private let finished = DispatchSemaphore(value: 0)
    private let logger = Logger(label: "tandem.loop")

    private enum RunState { case running, stopping, stopped }
    private struct Inbox {
        var jobs: [LoopJob] = []
        var wakePending = false
        var state = RunState.running
    }
    private let inbox = Mutex(Inbox())
    /// True while the inbox holds jobs (set and cleared under the inbox's lock): the spin below reads
    /// it without taking the lock, so that it does not contend with the threads that submit.
    private let inboxHasJobs = Atomic<Bool>(false)

    private struct Watcher {
        var fd: Int32
        var events: IOEvents
        var callback: @Sendable (IOEvents) -> Void
    }
    private var watchers: [UInt64: Watcher] = [:]
    private var fdWatches: [Int32: UInt64] = [:]
    private var timers: [UInt64: @Sendable () -> Void] = [:]
    private var heap = TimerHeap()
    private var nextID: UInt64 = 1
    private var shutdownHooks = ShutdownHooks()
    /// Runs Swift jobs enqueued after shutdown, one at a time (see ``enqueue(_:)``).
    private let afterShutdown: DispatchQueue
    private let spinNanos: UInt64
    private var hadWork = false
    /// Whether spinning pays on this loop's load: +4 when a spin found work before its time was up, -1
    /// when it did not (kept within -64...64). Below zero the loop parks at once, but for one spin in
    /// 32 idle turns, which keeps measuring: it spins while more than one spin in five finds work.
    /// (Small HTTP requests find work; Redis GETs, whose next event is the server's reply, do not,
    /// and a spin there only took a core from the threads that were about to submit.)
    private var spinScore = 0
    private var idleTurns: UInt = 0

    /// Starts a loop on a new thread.
    /// - Parameter name: the thread name, also used in errors.
    /// - Parameter spinMicroseconds: after a turn that had work, how long to poll for more before
    ///   parking the thread (`TANDEM_LOOP_SPIN_US`, default 20; 0 parks at once). The loop spins only
    ///   while spinning pays: when fewer than one spin in five finds work, it parks at once (and
    ///   spins once in 32 idle turns, to notice when the load changes).
    public init(name: String = "tandem-loop", spinMicroseconds: Int? = nil) {
        self.name = name
        let env = ProcessInfo.processInfo.environment["TANDEM_LOOP_SPIN_US"].flatMap(Int.init)
        self.spinNanos = UInt64(max(0, spinMicroseconds ?? env ?? 20)) * 1000
        self.afterShutdown = DispatchQueue(label: name + ".after-shutdown")
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        precondition(epfd >= 0 && wakeFD >= 0, "epoll_create1/eventfd failed: \(Errno.current)")
        var ev = ctandemsys_epoll_event(EPOLLIN.rawValue, 0)
        precondition(epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, &ev) == 0, "epoll_ctl(eventfd) failed: \(Errno.current)")
        let thread = Thread { [self] in self.runLoop() }
        thread.name = name
        thread.stackSize = 1 << 21
        thread.start()
    }

    deinit {
        close(wakeFD)
        close(epfd)
    }

    private var identity: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    /// True on this loop's thread.
    public var inEventLoop: Bool { LoopThread.current == identity }

    // MARK: submission (any thread)

    /// Runs `work` on the loop thread; see ``TandemEventLoop/execute(_:)``.
    public func execute(_ work: @escaping @Sendable () -> Void) throws {
        try submit(.closure(work))
    }

    func submit(_ job: LoopJob) throws {
        let onLoop = inEventLoop
        let wake = try inbox.locked { s throws(TandemError) -> Bool in
            guard s.state == .running || (s.state == .stopping && onLoop) else { throw TandemError.loopShutDown(loop: name) }
            s.jobs.append(job)
            inboxHasJobs.store(true, ordering: .relaxed)
            if s.wakePending || onLoop { return false }
            s.wakePending = true
            return true
        }
        if wake { signalWake() }
    }

    private func signalWake() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { write(wakeFD, $0.baseAddress, 8) }
    }

    // MARK: loop-thread API

    /// Watches `fd`; see ``TandemEventLoop/watch(_:events:callback:)``. One watch per descriptor.
    public func watch(_ fd: Int32, events: IOEvents, callback: @escaping @Sendable (IOEvents) -> Void) throws -> WatchID {
        precondition(inEventLoop, "watch must be called on the loop thread")
        let id = nextID
        var ev = ctandemsys_epoll_event(EpollEventLoop.mask(events), id)
        if epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0 {
            let e = Errno.current.code
            if e == EEXIST { throw TandemError.system(operation: "watch fd \(fd): already watched", errno: e) }
            throw TandemError.system(operation: "epoll_ctl(ADD, fd \(fd))", errno: e)
        }
        nextID += 1
        if let stale = fdWatches[fd] {
            // The kernel took the new registration, so the old watch's descriptor was closed without
            // `unwatch` (the kernel then forgets it) and its number reused: that watch is dead.
            watchers.removeValue(forKey: stale)
            logger.debug("dropped the watch of a descriptor closed without unwatch", metadata: ["fd": "\(fd)"])
        }
        watchers[id] = Watcher(fd: fd, events: events, callback: callback)
        fdWatches[fd] = id
        return WatchID(raw: id)
    }

    /// Changes a watch's interest; see ``TandemEventLoop/updateWatch(_:events:)``.
    public func updateWatch(_ id: WatchID, events: IOEvents) {
        precondition(inEventLoop, "updateWatch must be called on the loop thread")
        guard var w = watchers[id.raw], w.events != events else { return }
        w.events = events
        watchers[id.raw] = w
        var ev = ctandemsys_epoll_event(EpollEventLoop.mask(events), id.raw)
        if epoll_ctl(epfd, EPOLL_CTL_MOD, w.fd, &ev) != 0 {
            logger.debug("epoll_ctl(MOD) failed", metadata: ["fd": "\(w.fd)", "error": "\(Errno.current)"])
        }
    }

    /// Stops watching; see ``TandemEventLoop/unwatch(_:)``.
    public func unwatch(_ id: WatchID) {
        precondition(inEventLoop, "unwatch must be called on the loop thread")
        guard let w = watchers.removeValue(forKey: id.raw) else { return }
        if fdWatches[w.fd] == id.raw { fdWatches.removeValue(forKey: w.fd) }
        var ev = epoll_event()
        // EBADF/ENOENT: the descriptor was already closed (and so removed by the kernel); harmless.
        _ = epoll_ctl(epfd, EPOLL_CTL_DEL, w.fd, &ev)
    }

    /// Schedules a one-shot timer; see ``TandemEventLoop/schedule(after:_:)``.
    @discardableResult
    public func schedule(after delay: Duration, _ callback: @escaping @Sendable () -> Void) -> TimerID {
        precondition(inEventLoop, "schedule must be called on the loop thread")
        let id = nextID
        nextID += 1
        let deadline = monotonicNanos() &+ delay.clampedNanoseconds
        heap.push(.init(deadline: deadline, id: id))
        timers[id] = callback
        return TimerID(raw: id)
    }

    /// Cancels a timer; see ``TandemEventLoop/cancel(_:)``.
    public func cancel(_ id: TimerID) {
        precondition(inEventLoop, "cancel must be called on the loop thread")
        timers.removeValue(forKey: id.raw)
        if heap.count > 1024 && heap.count > 2 * timers.count {
            heap.compact { timers[$0] != nil }
        }
    }

    /// Registers a shutdown hook; see ``TandemEventLoop/onShutdown(_:)``.
    @discardableResult
    public func onShutdown(_ hook: @escaping @Sendable () -> Void) -> ShutdownHookID {
        precondition(inEventLoop, "onShutdown must be called on the loop thread")
        nextID += 1
        return shutdownHooks.add(nextID - 1, hook)
    }

    /// Forgets a shutdown hook; see ``TandemEventLoop/removeShutdownHook(_:)``.
    public func removeShutdownHook(_ id: ShutdownHookID) {
        precondition(inEventLoop, "removeShutdownHook must be called on the loop thread")
        shutdownHooks.remove(id)
    }

    /// Stops the loop and joins its thread; see ``TandemEventLoop/shutdown()``. Work already submitted runs
    /// first, then the shutdown hooks (and whatever work they submit).
    public func shutdown() {
        precondition(!inEventLoop, "shutdown must not be called on the loop thread (it joins it)")
        let first = inbox.locked { s -> Bool in
            guard s.state == .running else { return false }
            s.state = .stopping
            return true
        }
        if first { signalWake() }
        finished.wait()
        finished.signal()  // later shutdown() calls return at once
    }

    // MARK: the loop

    private static func mask(_ events: IOEvents) -> UInt32 {
        var m: UInt32 = 0
        if events.contains(.read) { m |= EPOLLIN.rawValue | EPOLLRDHUP.rawValue }
        if events.contains(.write) { m |= EPOLLOUT.rawValue }
        return m
    }

    private let resumeBatch = ResumeBatch()

    private func runLoop() {
        setCurrentThreadName(name)
        LoopThread.set(identity)
        resumeBatch.install()
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        var batch: [LoopJob] = []
        var counter: UInt64 = 0
        while true {
            var timeout: Int32 = -1
            let pending = inbox.locked { !$0.jobs.isEmpty || $0.state != .running }
            if pending {
                timeout = 0
            } else if let first = heap.first {
                let now = monotonicNanos()
                timeout = first.deadline <= now ? 0 : Int32(min(Int64(Int32.max), Int64((first.deadline - now + 999_999) / 1_000_000)))
            }
            var n = events.withUnsafeMutableBufferPointer { epoll_wait(epfd, $0.baseAddress, Int32($0.count), 0) }
            if n == 0 && timeout != 0 {
                // Waking a thread parked in epoll_wait costs tens of microseconds on virtual machines:
                // after a busy turn, poll the inbox for a short while before parking.
                if spinNanos > 0 && hadWork {
                    idleTurns &+= 1
                    if spinScore >= 0 || idleTurns % 32 == 0 {
                        let until = monotonicNanos() &+ spinNanos
                        var found = false
                        while !found && monotonicNanos() < until {
                            found = inboxHasJobs.load(ordering: .relaxed)
                        }
                        spinScore = found ? min(64, spinScore + 4) : max(-64, spinScore - 1)
                    }
                }
                if inbox.locked({ $0.jobs.isEmpty }) {
                    n = events.withUnsafeMutableBufferPointer { epoll_wait(epfd, $0.baseAddress, Int32($0.count), timeout) }
                }
            }
            hadWork = n > 0
            let turnStart = monotonicNanos()
            var ran = 0
            if n < 0, case let e = Errno.current, !e.isInterrupted {
                logger.error("epoll_wait failed", metadata: ["error": "\(e)"])
            }
            for i in 0..<max(0, Int(n)) {
                let (id, flags) = events.withUnsafeBufferPointer {
                    (ctandemsys_epoll_event_data($0.baseAddress! + i), ctandemsys_epoll_event_events($0.baseAddress! + i))
                }
                if id == 0 {
                    _ = read(wakeFD, &counter, 8)
                    continue
                }
                guard let w = watchers[id] else { continue }  // removed earlier in this batch
                var ready: IOEvents = []
                let hangup = flags & (EPOLLHUP.rawValue | EPOLLERR.rawValue | EPOLLRDHUP.rawValue) != 0
                if flags & EPOLLIN.rawValue != 0 || (hangup && w.events.contains(.read)) { ready.insert(.read) }
                if flags & EPOLLOUT.rawValue != 0 || (hangup && w.events.contains(.write)) { ready.insert(.write) }
                if flags & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 { ready.insert(.error) }
                w.callback(ready)
                ran += 1
            }
            ran += runTimers()
            let state = inbox.locked { s -> RunState in
                swap(&batch, &s.jobs)
                inboxHasJobs.store(false, ordering: .relaxed)
                s.wakePending = false
                return s.state
            }
            if !batch.isEmpty { hadWork = true }
            for job in batch { runJob(job) }
            ran += batch.count
            batch.removeAll(keepingCapacity: true)
            resumeBatch.flush()
            counters.add(tasks: ran, busySince: turnStart, now: monotonicNanos())
            if state == .stopping {
                if !shutdownHooks.haveRun {
                    // One more turn after the hooks: the work they submit (and the resumptions of
                    // what they failed) is drained before the thread ends.
                    for hook in shutdownHooks.takeAll() { hook() }
                    resumeBatch.flush()
                    continue
                }
                let done = inbox.locked { s -> Bool in
                    guard s.jobs.isEmpty else { return false }
                    s.state = .stopped
                    return true
                }
                if done { break }
            }
        }
        // Pending timers and watches are dropped without being called.
        for (_, w) in watchers {
            var ev = epoll_event()
            _ = epoll_ctl(epfd, EPOLL_CTL_DEL, w.fd, &ev)
        }
        watchers.removeAll()
        fdWatches.removeAll()
        timers.removeAll()
        heap.removeAll()
        resumeBatch.uninstall()
        LoopThread.set(nil)
        finished.signal()
    }

    /// Runs the timers that are due; returns how many ran.
    private func runTimers() -> Int {
        guard !heap.isEmpty else { return 0 }
        let now = monotonicNanos()
        var ran = 0
        while let top = heap.first, top.deadline <= now {
            _ = heap.pop()
            if let cb = timers.removeValue(forKey: top.id) {
                cb()
                ran += 1
            }
        }
        return ran
    }

    private let counters = LoopCounters()

    /// The work this loop's thread ran and the time it was busy; see ``EventLoopStatistics``.
    public var statistics: EventLoopStatistics { counters.snapshot }

    @inline(__always)
    private func runJob(_ job: LoopJob) {
        switch job {
        case .closure(let c): c()
        case .job(let j): j.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
        }
    }
}

extension EpollEventLoop: SerialExecutor, TaskExecutor {
    /// Runs a Swift job on the loop thread. After shutdown the job runs on a serial queue of this
    /// loop's own, once the loop thread has ended, and as this executor: no task is left hanging, and
    /// an actor on the loop still runs one job at a time.
    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        do {
            try submit(.job(unowned))
        } catch {
            afterShutdown.async { [self] in
                // The loop thread may still be draining its last turn: wait for it to end first.
                finished.wait()
                finished.signal()
                LoopThread.set(identity)
                unowned.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
                LoopThread.set(nil)
            }
        }
    }

    /// This loop as an unowned serial executor.
    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Traps unless called on the loop thread (lets `assumeIsolated` work for actors on the loop).
    public func checkIsolated() {
        precondition(inEventLoop, "not on event loop '\(name)'")
    }
}
