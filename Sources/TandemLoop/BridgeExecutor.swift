import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The executor a thread becomes while it waits in `Bridge.blocking`: jobs of the bridged task (and
/// its children) are queued here and run on the waiting thread.
final class BridgeExecutor: TaskExecutor, @unchecked Sendable {
    // Why @unchecked Sendable is safe: all mutable state is inside `state` (a Mutex); `wakeup` is a
    // semaphore, itself thread-safe.
    private struct State {
        var jobs: [UnownedJob] = []
        var sleeping = false
        var result: Result<any Sendable, any Error>?
    }
    private let state = Mutex(State())
    private let wakeup = DispatchSemaphore(value: 0)

    func enqueue(_ job: consuming ExecutorJob) {
        let j = UnownedJob(job)
        let wake = state.locked { s -> Bool in
            s.jobs.append(j)
            defer { s.sleeping = false }
            return s.sleeping
        }
        if wake { wakeup.signal() }
    }

    func finish(_ r: Result<any Sendable, any Error>) {
        let wake = state.locked { s -> Bool in
            s.result = r
            defer { s.sleeping = false }
            return s.sleeping
        }
        if wake { wakeup.signal() }
    }

    func runUntilFinished<T>(as: T.Type) throws -> T {
        let previous = Bridge.bridgeThread.value
        Bridge.bridgeThread.set(Unmanaged.passUnretained(self).toOpaque())
        defer { Bridge.bridgeThread.set(previous) }
        var batch: [UnownedJob] = []
        while true {
            let result = state.locked { s -> Result<any Sendable, any Error>? in
                swap(&batch, &s.jobs)
                if batch.isEmpty, s.result == nil { s.sleeping = true }
                return batch.isEmpty ? s.result : nil
            }
            if let result {
                switch result {
                case .success(let v):
                    guard let t = v as? T else { preconditionFailure("bridge result of unexpected type") }
                    return t
                case .failure(let e): throw e
                }
            }
            if batch.isEmpty {
                wakeup.wait()
                continue
            }
            for j in batch { j.runSynchronously(on: asUnownedTaskExecutor()) }
            batch.removeAll(keepingCapacity: true)
        }
    }
}
