import TandemCache
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// Why a connect to one address failed.
package struct ConnectFailure: Error {
    package let reason: String
    package var timedOut = false
    package init(reason: String, timedOut: Bool = false) {
        self.reason = reason
        self.timedOut = timedOut
    }
}

/// Connects to the first of `addresses` that accepts, on the calling thread, within `timeout`
/// seconds in all. Returns a connected socket that the caller owns: blocking, or non-blocking when
/// `keepNonBlocking` (for a caller that waits with `poll`).
package func blockingConnect(_ addresses: [ResolvedAddress], timeout: Double, keepNonBlocking: Bool = false) -> Result<Int32, ConnectFailure> {
    let deadline = monotonicNanos() &+ UInt64(timeout * 1e9)
    var last = ConnectFailure(reason: "no address to connect to")
    for a in addresses {
        let now = monotonicNanos()
        guard now < deadline else { return .failure(ConnectFailure(reason: "connect timed out", timedOut: true)) }
        switch a.startConnect() {
        case .failure(let f):
            last = f
            continue
        case .success(let (fd, inProgress)):
            if inProgress {
                let ready = pollSocket(fd, events: POLLOUT, until: deadline)
                if case .success(false) = ready {
                    close(fd)
                    return .failure(ConnectFailure(reason: "connect timed out", timedOut: true))
                }
                let err = ResolvedAddress.connectError(fd)
                if case .failure(let e) = ready {
                    last = ConnectFailure(reason: "connect failed: \(e)")
                    close(fd)
                    continue
                }
                if err != 0 {
                    last = ConnectFailure(reason: "connect failed: \(Errno(err))")
                    close(fd)
                    continue
                }
            }
            if !keepNonBlocking {
                let flags = fcntl(fd, F_GETFL)
                _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
            }
            return .success(fd)
        }
    }
    return .failure(last)
}
