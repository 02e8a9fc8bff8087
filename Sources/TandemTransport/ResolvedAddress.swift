import TandemCache
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// One socket address of a server, as `getaddrinfo` gives it.
package struct ResolvedAddress: @unchecked Sendable {
    // Why @unchecked Sendable is safe: a plain value (sockaddr bytes) that is never mutated after creation.
    package let storage: sockaddr_storage
    package let length: socklen_t
    package let family: Int32
}

extension ResolvedAddress {
    /// A new non-blocking, close-on-exec stream socket for this address (TCP_NODELAY on TCP), with a
    /// connect to it started. Returns the descriptor and whether the connect is still in progress.
    package func startConnect() -> Result<(fd: Int32, inProgress: Bool), ConnectFailure> {
        let s = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { return .failure(ConnectFailure(reason: "socket() failed: \(Errno.current)")) }
        if family != AF_UNIX {
            var one: Int32 = 1
            setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        var storage = self.storage
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, length) }
        }
        if rc == 0 { return .success((s, false)) }
        let e = Errno.current
        if e.code == EINPROGRESS { return .success((s, true)) }
        let reason = "connect failed: \(e)"
        close(s)
        return .failure(ConnectFailure(reason: reason))
    }

    /// The pending error of a socket whose non-blocking connect finished (0: connected).
    package static func connectError(_ fd: Int32) -> Int32 {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 { return Errno.current.code }
        return err
    }
}
