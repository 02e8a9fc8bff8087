import CTandemSys
import Synchronization

extension Mutex {
    /// Runs `body` with the lock held, exactly like `withLock`, and also tells ThreadSanitizer about
    /// the ordering the lock provides.
    ///
    /// On Linux a contended `Mutex` is handed from one thread to the next inside the kernel
    /// (`FUTEX_LOCK_PI`), where ThreadSanitizer cannot see it; without these annotations every access
    /// the lock guards shows up as a race in `swift test --sanitize=thread`. In a build without the
    /// sanitizer the annotations are two tests of a null weak symbol. Tandem uses this everywhere
    /// instead of `withLock`, so that a sanitizer report is a real finding.
    @inlinable @inline(__always)
    package borrowing func locked<R, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending R
    ) throws(E) -> sending R {
        // A mutex lives at a fixed address (it is never copied or moved while borrowed): that address
        // stands for the lock. It is taken before locking, without touching the guarded value.
        let lock = withUnsafePointer(to: self) { UnsafeMutableRawPointer(mutating: $0) }
        return try withLock { (value: inout sending Value) throws(E) -> sending R in
            ctandemsys_tsan_acquire(lock)
            defer { ctandemsys_tsan_release(lock) }
            return try body(&value)
        }
    }
}
