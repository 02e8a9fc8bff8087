import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// Where a server listens: a host (name or numeric address) and port, or a unix socket path. Shared by
/// the backends that do their own socket I/O (Redis, and memcached's async face).
package enum ServerAddress: Sendable, Hashable {
    case tcp(host: String, port: Int)
    case unix(path: String)
}

/// One socket address of a server, as `getaddrinfo` gives it.
package struct ResolvedAddress: @unchecked Sendable {
    // Why @unchecked Sendable is safe: a plain value (sockaddr bytes) that is never mutated after creation.
    package let storage: sockaddr_storage
    package let length: socklen_t
    package let family: Int32
}

extension ServerAddress {
    /// The addresses to try, in order, when no name lookup is needed: a unix socket, or a host that is a
    /// numeric IPv4/IPv6 address. Nil for a host name (use ``resolveAll(description:)`` off the loop
    /// thread). `description` names the server in errors.
    package func addressesWithoutLookup(description: String) throws(CacheError) -> [ResolvedAddress]? {
        switch self {
        case .unix(let path):
            var a = sockaddr_un()
            a.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: a.sun_path) else {
                throw CacheError.connectionFailed(server: description, reason: "unix socket path too long")
            }
            withUnsafeMutableBytes(of: &a.sun_path) { raw in
                for (i, b) in bytes.enumerated() { raw[i] = b }
            }
            var storage = sockaddr_storage()
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: a) { dst.copyMemory(from: $0) } }
            return [ResolvedAddress(storage: storage, length: socklen_t(MemoryLayout<sockaddr_un>.size), family: AF_UNIX)]
        case .tcp(let host, let port):
            return try? lookup(host: host, port: port, flags: AI_NUMERICHOST, description: description)
        }
    }

    /// Every address of the endpoint, in `getaddrinfo`'s order (which follows RFC 6724, so `localhost`
    /// may give `::1` before `127.0.0.1`: callers try them in turn). Blocks while the name is looked
    /// up: never call it on a loop thread.
    package func resolveAll(description: String) throws(CacheError) -> [ResolvedAddress] {
        if let direct = try addressesWithoutLookup(description: description) { return direct }
        guard case .tcp(let host, let port) = self else { return [] }
        return try lookup(host: host, port: port, flags: 0, description: description)
    }

    private func lookup(host: String, port: Int, flags: Int32, description: String) throws(CacheError) -> [ResolvedAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = flags | AI_ADDRCONFIG
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            let why = rc == 0 ? "no address" : String(cString: gai_strerror(rc))
            throw CacheError.connectionFailed(server: description, reason: "cannot resolve host '\(host)': \(why)")
        }
        defer { freeaddrinfo(result) }
        var out: [ResolvedAddress] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let a = p {
            var storage = sockaddr_storage()
            let len = min(a.pointee.ai_addrlen, socklen_t(MemoryLayout<sockaddr_storage>.size))
            withUnsafeMutableBytes(of: &storage) { dst in
                dst.copyMemory(from: UnsafeRawBufferPointer(start: a.pointee.ai_addr, count: Int(len)))
            }
            out.append(ResolvedAddress(storage: storage, length: len, family: a.pointee.ai_family))
            p = a.pointee.ai_next
        }
        return out
    }
}

extension ResolvedAddress {
    /// A new non-blocking, close-on-exec stream socket for this address (TCP_NODELAY on TCP), with a
    /// connect to it started. Returns the descriptor and whether the connect is still in progress.
    package func startConnect() -> Result<(fd: Int32, inProgress: Bool), ConnectFailure> {
        let s = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { return .failure(ConnectFailure(reason: "socket() failed: \(String(cString: strerror(errno)))")) }
        if family != AF_UNIX {
            var one: Int32 = 1
            setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        var storage = self.storage
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, length) }
        }
        if rc == 0 { return .success((s, false)) }
        if errno == EINPROGRESS { return .success((s, true)) }
        let reason = "connect failed: \(String(cString: strerror(errno)))"
        close(s)
        return .failure(ConnectFailure(reason: reason))
    }

    /// The pending error of a socket whose non-blocking connect finished (0: connected).
    package static func connectError(_ fd: Int32) -> Int32 {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 { return errno }
        return err
    }
}

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
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                var rc: Int32
                repeat {
                    let ms = Int32(min(Int64(Int32.max), Int64((deadline &- min(deadline, monotonicNanos())) / 1_000_000) + 1))
                    rc = poll(&p, 1, ms)
                } while rc < 0 && errno == EINTR
                if rc == 0 {
                    close(fd)
                    return .failure(ConnectFailure(reason: "connect timed out", timedOut: true))
                }
                let err = ResolvedAddress.connectError(fd)
                if rc < 0 || err != 0 {
                    last = ConnectFailure(reason: "connect failed: \(String(cString: strerror(rc < 0 ? errno : err)))")
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
