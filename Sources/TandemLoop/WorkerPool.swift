import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A bounded pool of plain threads for blocking work (`Bridge.offload`), with one thread, the
/// dedicated thread for thread-sensitive work, and the pool where connections look up their servers.
package final class WorkerPool: Sendable {
    static let shared = WorkerPool(name: "tandem-offload", maxThreads: 32)
    static let sensitive = WorkerPool(name: "tandem-sync", maxThreads: 1)
    /// Where loop connections look up a server (a host name, or a primary the sentinels name, which
    /// can wait seconds on servers that do not answer) and Redis Cluster refreshes its slot map: plain
    /// threads of their own, started when first needed. Not Dispatch's global queue, whose threads
    /// the dispatch loops run on: blocking work there delays every dispatch loop's turn; not the
    /// offload pool either, which users' blocking work may fill.
    package static let lookups = WorkerPool(name: "tandem-lookup", maxThreads: 16)

    let name: String
    let maxThreads: Int
    private struct State {
        var queue: [@Sendable () -> Void] = []
        var head = 0
        var threads = 0
        var idle = 0
        var firstThread: pthread_t?
    }
    private let state = Mutex(State())
    private let available = DispatchSemaphore(value: 0)

    init(name: String, maxThreads: Int) {
        self.name = name
        self.maxThreads = maxThreads
    }

    var firstThreadID: pthread_t? { state.locked { $0.firstThread } }

    /// Runs `work` on one of the pool's threads (a new one when none is idle and the pool is not full;
    /// else after the work queued before it).
    package func submit(_ work: @escaping @Sendable () -> Void) {
        let spawn = state.locked { s -> Bool in
            s.queue.append(work)
            if s.queue.count - s.head > s.idle && s.threads < maxThreads {
                s.threads += 1
                return true
            }
            return false
        }
        available.signal()
        if spawn {
            let t = Thread { [self] in workerLoop() }
            t.name = name
            t.start()
        }
    }

    private func workerLoop() {
        state.locked { s in if s.firstThread == nil { s.firstThread = pthread_self() } }
        while true {
            state.locked { $0.idle += 1 }
            available.wait()
            let work = state.locked { s -> (@Sendable () -> Void)? in
                s.idle -= 1
                guard s.head < s.queue.count else { return nil }
                let w = s.queue[s.head]
                s.head += 1
                if s.head > 1024 && s.head * 2 > s.queue.count {
                    s.queue.removeFirst(s.head)
                    s.head = 0
                }
                return w
            }
            work?()
        }
    }
}
