#if canImport(Glibc)
import Glibc
#endif

/// A system call's `errno`, read once, with its text: the one place Tandem reads `errno` and turns it
/// into words (socket I/O, connects, polls, the loops' own calls).
package struct Errno: Error, Sendable, Equatable, CustomStringConvertible {
    package let code: Int32

    package init(_ code: Int32) { self.code = code }

    /// The calling thread's `errno` now: read it right after the call that failed.
    package static var current: Errno { Errno(errno) }

    /// `strerror`'s text ("Connection refused").
    package var description: String { String(cString: strerror(code)) }

    /// The call was interrupted by a signal and may be repeated.
    package var isInterrupted: Bool { code == EINTR }

    /// A non-blocking call would have blocked (or a socket timeout expired).
    package var wouldBlock: Bool { code == EAGAIN || code == EWOULDBLOCK }
}
