import Foundation
import ServiceLifecycle
import Synchronization

/// Readiness interest for a watched file descriptor.
public struct IOEvents: OptionSet, Sendable, Hashable {
    /// The event bits.
    public let rawValue: UInt8
    /// Creates a set of events from its raw bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The descriptor has data to read (or the peer closed it).
    public static let read = IOEvents(rawValue: 1)
    /// The descriptor can accept more data.
    public static let write = IOEvents(rawValue: 2)
    /// An error or hang-up was reported on the descriptor.
    public static let error = IOEvents(rawValue: 4)
}

/// Identifies a registered descriptor watch, returned by ``TandemEventLoop/watch(_:events:callback:)``.
public struct WatchID: Hashable, Sendable {
    /// The loop-unique number of the watch.
    public let raw: UInt64
    /// Wraps a raw watch number (loops create these; users only pass them back).
    public init(raw: UInt64) { self.raw = raw }
}

/// Identifies a shutdown hook, returned by ``TandemEventLoop/onShutdown(_:)``.
public struct ShutdownHookID: Hashable, Sendable {
    /// The loop-unique number of the hook.
    public let raw: UInt64
    /// Wraps a raw hook number (loops create these; users only pass them back).
    public init(raw: UInt64) { self.raw = raw }
}

/// Identifies a scheduled timer, returned by ``TandemEventLoop/schedule(after:_:)``.
public struct TimerID: Hashable, Sendable {
    /// The loop-unique number of the timer.
    public let raw: UInt64
    /// Wraps a raw timer number (loops create these; users only pass them back).
    public init(raw: UInt64) { self.raw = raw }
}

/// A single-threaded event loop: it waits on descriptors and timers and runs submitted work, all on
/// one thread, so that libraries whose handles are not thread-safe (hiredis async contexts, the curl
/// multi handle) are only ever touched from that thread.
///
/// Rules of the contract:
/// - ``execute(_:)`` may be called from any thread; work runs on the loop thread, in submission order
///   per submitting thread, each closure exactly once. Everything submitted while the loop was busy is
///   drained in one batch.
/// - ``watch(_:events:callback:)``, ``unwatch(_:)``, ``updateWatch(_:events:)``, ``schedule(after:_:)`` and
///   ``cancel(_:)`` are called on the loop thread (use ``execute(_:)`` to get there). Callbacks run on the loop thread.
/// - ``shutdown()`` runs the hooks registered with ``onShutdown(_:)``, cancels pending timers and
///   watches, joins the loop thread, and makes later submissions fail with ``TandemError/loopShutDown``.
public protocol TandemEventLoop: AnyObject, Sendable {
    /// Runs `work` on the loop thread. Throws ``TandemError/loopShutDown`` after ``shutdown()``.
    func execute(_ work: @escaping @Sendable () -> Void) throws

    /// True when the caller is running on this loop's thread.
    var inEventLoop: Bool { get }

    /// Watches `fd` for `events`; `callback` runs on the loop thread with the events that are ready,
    /// for as long as they stay ready (level-triggered). Loop thread only. Watching a descriptor that
    /// is already watched fails, unless the earlier watch's descriptor was closed without `unwatch`
    /// and the number now names another file: that dead watch is replaced.
    func watch(_ fd: Int32, events: IOEvents, callback: @escaping @Sendable (IOEvents) -> Void) throws -> WatchID

    /// Changes the events a watch is interested in. Loop thread only.
    func updateWatch(_ id: WatchID, events: IOEvents)

    /// Stops watching. Safe to call from inside the watch's own callback and for an unknown id.
    /// Loop thread only.
    func unwatch(_ id: WatchID)

    /// Runs `callback` once on the loop thread after `delay`. Loop thread only.
    @discardableResult
    func schedule(after delay: Duration, _ callback: @escaping @Sendable () -> Void) -> TimerID

    /// Cancels a timer; a cancelled timer never fires. Unknown or fired ids are ignored. Loop thread only.
    func cancel(_ id: TimerID)

    /// Registers `hook` to run once, on the loop thread, when the loop shuts down: after the work
    /// already submitted and before timers and watches are dropped, so that whoever owns work in flight
    /// on this loop (Redis commands, HTTP transfers) can end it with a typed error instead of leaving
    /// its callers waiting. Loop thread only. On a loop that is already stopping, `hook` runs at once.
    /// The hook holds what it captures until ``removeShutdownHook(_:)`` or the shutdown.
    @discardableResult
    func onShutdown(_ hook: @escaping @Sendable () -> Void) -> ShutdownHookID

    /// Forgets a hook registered with ``onShutdown(_:)`` (unknown ids are ignored). Loop thread only.
    func removeShutdownHook(_ id: ShutdownHookID)

    /// Stops the loop: the shutdown hooks run, pending timers and watches are dropped, the loop thread
    /// is joined, and later submissions throw ``TandemError/loopShutDown``. Must not be called on the
    /// loop thread.
    func shutdown()
}

extension TandemEventLoop {
    /// ``shutdown()`` from async code: the join happens on a thread of its own, so no cooperative
    /// thread is blocked while the loop finishes its last turn and its shutdown hooks.
    public func shutdownGracefully() async {
        if inEventLoop {
            preconditionFailure("shutdownGracefully must not be called on the loop's own thread (it joins it)")
        }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let t = Thread { [self] in
                shutdown()
                done.resume()
            }
            t.name = "tandem-loop-shutdown"
            t.start()
        }
    }
}

extension EpollEventLoop: Service {
    /// Runs until the service group's graceful shutdown (or the task's cancellation), then shuts the
    /// loop down: its shutdown hooks end the Redis commands and HTTP transfers still in flight on it
    /// with typed errors, and its thread ends. List it first in a `ServiceGroup`, so that it stops
    /// last, after the caches and clients that use it have drained. The process-wide loops
    /// (``EventLoops/shared``, ``EventLoops/group``'s) are left running: they belong to the process,
    /// and another application in it may still use them.
    public func run() async throws {
        try? await gracefulShutdown()
        if EventLoops.belongsToProcess(self) { return }
        await shutdownGracefully()
    }
}

extension DispatchEventLoop: Service {
    /// Runs until the service group's graceful shutdown (or the task's cancellation), then shuts the
    /// loop down; see ``EpollEventLoop/run()``.
    public func run() async throws {
        try? await gracefulShutdown()
        await shutdownGracefully()
    }
}

/// Errors raised by the loop, the bridges and the async-safety guard.
public enum TandemError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A blocking call was made on an event-loop thread, where it would deadlock the loop.
    case blockingCallOnEventLoop(operation: String)
    /// A blocking call was made from inside a Swift task while the policy is `.error`.
    case blockingCallInAsyncContext(operation: String)
    /// Work was submitted to a loop that has been shut down.
    case loopShutDown(loop: String)
    /// The operating system refused a loop operation.
    case system(operation: String, errno: Int32)

    /// A human-readable explanation naming the operation at fault.
    public var description: String {
        switch self {
        case .blockingCallOnEventLoop(let op):
            return "blocking call '\(op)' made on an event-loop thread: it would deadlock the loop; use the async face (`.async`) instead"
        case .blockingCallInAsyncContext(let op):
            return "blocking call '\(op)' made from inside a Swift task: it would stall a cooperative thread; use the async face (`try await x.async...`), or set the async-unsafe policy to .warn/.allow (TANDEM_ALLOW_ASYNC_UNSAFE=1)"
        case .loopShutDown(let loop):
            return "event loop '\(loop)' has been shut down; no more work can be submitted"
        case .system(let op, let e):
            return "\(op) failed: \(Errno(e)) (errno \(e))"
        }
    }
}
