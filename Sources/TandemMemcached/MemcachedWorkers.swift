import Dispatch
import Foundation
import Synchronization
@_spi(Backend) import TandemCache
import TandemLoop

/// The async face's workers: a bounded set of plain threads (never the loop thread, never the
/// cooperative pool), since libmemcached does all its I/O with an internal blocking `poll()`.
///
/// Gets that queue up while the workers are busy are coalesced: a worker takes every waiting get and
/// sends them as one `memcached_mget`, then hands each waiter its own value. Nothing waits on purpose
/// for more gets: a lone get goes out at once.
final class MemcachedWorkers: Sendable {
    enum Job: Sendable {
        case get(String, LoopPromise<StoredValue?>)
        case other(@Sendable (MemcachedOps) -> Void, fail: @Sendable (any Error) -> Void)
    }

    private struct State {
        var jobs: [Job] = []
        var head = 0
        var threads = 0
        /// Workers parked on the semaphore.
        var idle = 0
        /// Signals sent and not yet consumed: no more wake-ups than parked workers.
        var pendingWakes = 0
        var stopping = false
    }

    /// Coalescing counters (for tests and metrics).
    struct Stats: Sendable {
        var gets = 0
        var getRoundTrips = 0
        var largestBatch = 0
    }

    private let state = Mutex(State())
    private let stats = Mutex(Stats())
    private let wakeup = DispatchSemaphore(value: 0)
    private let pool: MemcachedPool
    private let maxThreads: Int
    private let server: String
    /// The most gets one round trip carries.
    static let maxBatch = 1024

    init(pool: MemcachedPool, threads: Int, server: String) {
        self.pool = pool
        self.maxThreads = threads
        self.server = server
    }

    var statistics: Stats { stats.locked { $0 } }

    func submit(_ job: Job) {
        // A wake-up costs a system call (and tens of microseconds on virtual machines): wake a parked
        // worker only if none is already being woken; busy workers pick the job up when they finish.
        let (accepted, wake, spawn) = state.locked { s -> (Bool, Bool, Bool) in
            if s.stopping { return (false, false, false) }
            s.jobs.append(job)
            if s.idle > s.pendingWakes {
                s.pendingWakes += 1
                return (true, true, false)
            }
            if s.idle == 0 && s.threads < maxThreads && s.jobs.count - s.head > 1 || s.threads == 0 {
                s.threads += 1
                return (true, false, true)
            }
            return (true, false, false)
        }
        guard accepted else {
            fail(job, CacheError.closed(alias: server))
            return
        }
        if wake { wakeup.signal() }
        if spawn {
            // Named from inside, for debuggers and `top -H` (the kernel keeps 15 bytes of it).
            let t = Thread { [self] in
                setCurrentThreadName("tandem-memcached")
                run()
            }
            t.start()
        }
    }

    /// Stops the workers after the jobs already queued.
    func stop() {
        let n = state.locked { s -> Int in
            s.stopping = true
            s.pendingWakes += s.idle
            return s.idle
        }
        for _ in 0..<n { wakeup.signal() }
    }

    /// Worker threads still running.
    var runningThreads: Int { state.locked { $0.threads } }

    private func fail(_ job: Job, _ error: any Error) {
        switch job {
        case .get(_, let p): p.fail(error)
        case .other(_, let f): f(error)
        }
    }

    /// Takes the next job; if it is a get, also every other queued get (up to `maxBatch`).
    private func take() -> (gets: [(String, LoopPromise<StoredValue?>)], other: Job?, stop: Bool) {
        state.locked { s in
            guard s.head < s.jobs.count else { return ([], nil, s.stopping) }
            let first = s.jobs[s.head]
            if case .other = first {
                s.head += 1
                compact(&s)
                return ([], first, false)
            }
            var gets: [(String, LoopPromise<StoredValue?>)] = []
            var rest: [Job] = []
            for job in s.jobs[s.head...] {
                if case .get(let k, let p) = job, gets.count < MemcachedWorkers.maxBatch {
                    gets.append((k, p))
                } else {
                    rest.append(job)
                }
            }
            s.jobs = rest
            s.head = 0
            return (gets, nil, false)
        }
    }

    private func compact(_ s: inout State) {
        if s.head == s.jobs.count {
            s.jobs.removeAll(keepingCapacity: true)
            s.head = 0
        } else if s.head > 1024 && s.head * 2 > s.jobs.count {
            s.jobs.removeFirst(s.head)
            s.head = 0
        }
    }

    private func run() {
        while true {
            let (gets, other, stop) = take()
            if stop {
                state.locked { $0.threads -= 1 }
                return
            }
            if gets.isEmpty && other == nil {
                // Park, unless work arrived since `take` (checked under the same lock as `idle`).
                let park = state.locked { s -> Bool in
                    if s.head < s.jobs.count || s.stopping { return false }
                    s.idle += 1
                    return true
                }
                if park {
                    wakeup.wait()
                    state.locked { s in
                        s.idle -= 1
                        s.pendingWakes -= 1
                    }
                }
                continue
            }
            do {
                try pool.withHandle { handle in
                    let ops = MemcachedOps(handle: handle, server: server)
                    if let other, case .other(let work, _) = other { work(ops) }
                    if !gets.isEmpty { runGets(gets, ops) }
                }
            } catch {
                if let other { fail(other, error) }
                for (_, p) in gets { p.fail(error) }
            }
        }
    }

    private func runGets(_ gets: [(String, LoopPromise<StoredValue?>)], _ ops: MemcachedOps) {
        // Skip waiters whose tasks were cancelled meanwhile.
        let live = gets.filter { !$0.1.isCompleted }
        stats.locked { s in
            s.gets += gets.count
            if !live.isEmpty { s.getRoundTrips += 1 }
            s.largestBatch = max(s.largestBatch, live.count)
        }
        guard !live.isEmpty else { return }
        if live.count == 1 {
            live[0].1.complete(Result { try ops.get(live[0].0) })
            return
        }
        var seen = Set<String>()
        let unique = live.map(\.0).filter { seen.insert($0).inserted }
        do {
            let found = try ops.getMany(unique)
            for (k, p) in live { p.succeed(found[k]) }
        } catch {
            for (_, p) in live { p.fail(error) }
        }
    }
}
