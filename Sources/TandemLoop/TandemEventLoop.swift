import Foundation
import ServiceLifecycle
import Synchronization

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
///   watches, joins the loop thread, and makes later submissions fail with ``TandemError/loopShutDown(loop:)``.
public protocol TandemEventLoop: AnyObject, Sendable {
    /// Runs `work` on the loop thread. Throws ``TandemError/loopShutDown(loop:)`` after ``shutdown()``.
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
    /// is joined, and later submissions throw ``TandemError/loopShutDown(loop:)``. Must not be called on the
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
