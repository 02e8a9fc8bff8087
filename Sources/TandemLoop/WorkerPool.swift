import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A bounded pool of plain threads for blocking work (`Bridge.offload`) and, with one thread, the
/// dedicated thread for thread-sensitive work.
final class WorkerPool: Sendable {
    static let shared = WorkerPool(name: "tandem-offload", maxThreads: 32)
    static let sensitive = WorkerPool(name: "tandem-sync", maxThreads: 1)

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

    func submit(_ work: @escaping @Sendable () -> Void) {
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
