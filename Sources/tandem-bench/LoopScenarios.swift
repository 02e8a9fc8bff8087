import Dispatch
import Foundation
import Synchronization
import Tandem

/// Seconds per operation of `body`, run `iterations` times on a plain thread (not a Swift task).
func secondsPerOp(iterations: Int, _ body: @escaping @Sendable () -> Void) -> Double {
    let result = Mutex<Double>(0)
    let done = DispatchSemaphore(value: 0)
    let t = Thread {
        for _ in 0..<min(1000, iterations) { body() }  // warm-up
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<iterations { body() }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        result.locked { $0 = elapsed / Double(iterations) }
        done.signal()
    }
    t.start()
    done.wait()
    return result.locked { $0 }
}

@inline(never)
func trivialWork(_ x: Int) -> Int { x &* 31 &+ 7 }

@inline(never)
func trivialAsyncWork(_ x: Int) async -> Int { trivialWork(x) }

struct LoopScenarios {
    let iterations: Int
    let rounds: Int

    /// Submit from a plain thread, run on the loop, wake the caller: both loops, against
    /// `DispatchQueue.async` + semaphore.
    func roundTrip() throws -> [BenchResult] {
        var out: [BenchResult] = []
        let queue = DispatchQueue(label: "bench-reference")
        let loops: [(String, any TandemEventLoop)] = [("epoll", EpollEventLoop(name: "bench-epoll")), ("dispatch", DispatchEventLoop(name: "bench-dispatch"))]
        for (name, loop) in loops {
            out.append(compare("loop-roundtrip-\(name)", rounds: rounds, unit: "s", better: "lower", reference: {
                let sem = DispatchSemaphore(value: 0)
                return secondsPerOp(iterations: iterations) {
                    queue.async { sem.signal() }
                    sem.wait()
                }
            }, tandem: {
                let sem = DispatchSemaphore(value: 0)
                return secondsPerOp(iterations: iterations) {
                    try? loop.execute { sem.signal() }
                    sem.wait()
                }
            }))
            loop.shutdown()
        }
        return out
    }

    /// A blocking call through `Bridge.blocking` to a trivial async function, against the direct call.
    func bridgeOverhead() throws -> [BenchResult] {
        let sink = Atomic<Int>(0)
        let r = compare("bridge-overhead", rounds: rounds, unit: "s", better: "lower", reference: {
            secondsPerOp(iterations: iterations) { sink.add(trivialWork(3), ordering: .relaxed) }
        }, tandem: {
            secondsPerOp(iterations: iterations) {
                let v = (try? Bridge.blocking { await trivialAsyncWork(3) }) ?? 0
                sink.add(v, ordering: .relaxed)
            }
        })
        // A body that suspends: one loop round trip. Reference: the same round trip made the blocking
        // way (submit to the loop, wait on a semaphore); the difference is what the bridge adds when
        // the async body really waits.
        let loop = EpollEventLoop(name: "bench-bridge")
        defer { loop.shutdown() }
        let suspending = compare("bridge-overhead-suspending", rounds: rounds, unit: "s", better: "lower", reference: {
            let sem = DispatchSemaphore(value: 0)
            return secondsPerOp(iterations: iterations / 10) {
                try? loop.execute { sem.signal() }
                sem.wait()
            }
        }, tandem: {
            secondsPerOp(iterations: iterations / 10) {
                let v = (try? Bridge.blocking { try await withLoopPromise(on: loop) { (p: LoopPromise<Int>) in p.succeed(3) } }) ?? 0
                sink.add(v, ordering: .relaxed)
            }
        })
        return [r, suspending]
    }
}
