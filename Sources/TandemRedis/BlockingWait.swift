import Dispatch
import Synchronization
import TandemLoop
import TandemCache

/// A result that loop code delivers and a blocked thread waits for, at most for a while. The first
/// ``finish(_:)`` wins; later ones are ignored, so a late reply after a timed-out wait is harmless.
final class BlockingWait<T: Sendable>: Sendable {
    private let result = Mutex<Result<T, CacheError>?>(nil)
    private let ready = DispatchSemaphore(value: 0)

    func finish(_ r: Result<T, CacheError>) {
        let first = result.locked { slot -> Bool in
            guard slot == nil else { return false }
            slot = r
            return true
        }
        if first { ready.signal() }
    }

    /// The result, or nil when none came within `seconds`.
    func wait(seconds: Double) -> Result<T, CacheError>? {
        guard ready.wait(timeout: .now() + .nanoseconds(Int(seconds * 1e9))) == .success else { return nil }
        return result.locked { $0 }
    }
}
