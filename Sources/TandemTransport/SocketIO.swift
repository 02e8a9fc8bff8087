import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// What one read or write of a plain socket did. An interrupted call is repeated, never reported.
package enum SocketIO: Equatable {
    /// This many bytes (more than zero) were read or written.
    case bytes(Int)
    /// Nothing can be read or written now (a non-blocking socket), or the socket's timeout expired.
    case wouldBlock
    /// The peer closed the connection (a read returned end of stream).
    case closed
    /// The call failed.
    case failed(Errno)

    /// Sends what `bytes` holds on `fd`; never raises SIGPIPE. `dontWait` makes this one call
    /// non-blocking on a blocking socket.
    package static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, dontWait: Bool = false) -> SocketIO {
        let flags = Int32(MSG_NOSIGNAL) | (dontWait ? Int32(MSG_DONTWAIT) : 0)
        while true {
            let n = Glibc.send(fd, bytes.baseAddress, bytes.count, flags)
            if n == 0 && bytes.count > 0 { return .closed }
            if let r = outcome(n) { return r }
        }
    }

    /// Reads into `buffer` from `fd`. `dontWait` makes this one call non-blocking on a blocking socket.
    package static func receive(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, dontWait: Bool = false) -> SocketIO {
        let flags = dontWait ? Int32(MSG_DONTWAIT) : 0
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, flags)
            if n == 0 && buffer.count > 0 { return .closed }
            if let r = outcome(n) { return r }
        }
    }

    /// Nil: interrupted, call again.
    private static func outcome(_ n: Int) -> SocketIO? {
        if n >= 0 { return .bytes(n) }
        let e = Errno.current
        if e.isInterrupted { return nil }
        return e.wouldBlock ? .wouldBlock : .failed(e)
    }
}

/// Waits until `fd` is ready for `events` (`POLLIN`, `POLLOUT`) or reports an error or hang-up, until
/// `deadline` (``monotonicNanos()``). True when ready (the next read or write reports an error);
/// false when the time ran out. An interrupted wait is resumed with the time that is left.
package func pollSocket(_ fd: Int32, events: Int32, until deadline: UInt64) -> Result<Bool, Errno> {
    while true {
        let now = monotonicNanos()
        guard now < deadline else { return .success(false) }
        var p = pollfd(fd: fd, events: Int16(events), revents: 0)
        let ms = Int32(min(Int64(Int32.max), Int64((deadline - now + 999_999) / 1_000_000)))
        let rc = poll(&p, 1, ms)
        if rc > 0 { return .success(true) }
        if rc < 0 {
            let e = Errno.current
            if !e.isInterrupted { return .failure(e) }
        }
    }
}
