import TandemCache
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
