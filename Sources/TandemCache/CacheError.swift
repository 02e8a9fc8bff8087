/// Errors raised by caches, their settings and their backends. Each case names the key, the
/// setting or the server at fault. Passwords never appear in these messages.
public enum CacheError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `caches[alias]` named an alias that is not configured.
    case unknownAlias(String, known: [String])
    /// A BACKEND name is not registered.
    case unknownBackend(alias: String, backend: String, known: [String])
    /// A setting has the wrong type or value. `field` is e.g. `TIMEOUT` or `OPTIONS.MAX_ENTRIES`.
    case invalidSetting(alias: String, field: String, reason: String)
    /// A key that the backend cannot store (too long, control characters or spaces for memcached).
    case invalidKey(key: String, reason: String)
    /// `incr`/`decr`/`incrVersion` on a key that does not exist.
    case missingKey(String)
    /// `incr`/`decr` on a value that is not an integer, or an increment that overflows.
    case notAnInteger(key: String)
    /// A value larger than the backend accepts.
    case valueTooLarge(key: String, size: Int, limit: Int?)
    /// A value could not be encoded for storage.
    case encodingFailed(key: String, type: String, reason: String)
    /// A stored value could not be decoded as the requested type.
    case decodingFailed(key: String, type: String, reason: String)
    /// The backend did not answer in time.
    case timeout(operation: String, server: String)
    /// The backend could not be reached or the connection broke.
    case connectionFailed(server: String, reason: String)
    /// The server answered with an error.
    case serverError(server: String, message: String)
    /// The server refused the credentials (the password is never part of the message).
    case authenticationFailed(server: String, reason: String)
    /// A TLS connection could not be set up: `failure` says whether the server was not trusted, its
    /// certificate named another host, or the handshake failed.
    case tls(server: String, failure: TLSFailure)
    /// No connection could be borrowed from the pool in time.
    case poolExhausted(server: String, size: Int)
    /// The cache (or its backend) was closed.
    case closed(alias: String)
    /// The cache's circuit breaker is open after consecutive server failures: the call skipped the
    /// server (see ``CacheResilience``).
    case circuitOpen(alias: String)
    /// A graceful shutdown refused the call, or ended it while it was in flight: the cache was shut
    /// down (`what` names it: `cache 'default'`), or the event loop its connections run on was
    /// (`what` names the server).
    case shutDown(String)
    /// An argument that the operation cannot carry out as asked (for example a delta that has no
    /// negation); refused before any I/O.
    case invalidArgument(key: String, reason: String)

    /// A human-readable explanation that names what was wrong.
    public var description: String {
        switch self {
        case .unknownAlias(let a, let known):
            return "unknown cache alias '\(a)'; configured aliases: \(known.sorted().joined(separator: ", "))"
        case .unknownBackend(let alias, let b, let known):
            return "cache '\(alias)': unknown BACKEND '\(b)'; known backends: \(known.sorted().joined(separator: ", "))"
        case .invalidSetting(let alias, let field, let reason):
            return "cache '\(alias)': invalid setting \(field): \(reason)"
        case .invalidKey(let key, let reason):
            return "invalid cache key \(CacheError.quote(key)): \(reason)"
        case .missingKey(let key):
            return "cache key \(CacheError.quote(key)) not found"
        case .notAnInteger(let key):
            return "value of cache key \(CacheError.quote(key)) is not an integer (or the result overflows)"
        case .valueTooLarge(let key, let size, let limit):
            return "value for cache key \(CacheError.quote(key)) is too large (\(size) bytes\(limit.map { ", limit \($0)" } ?? ""))"
        case .encodingFailed(let key, let type, let reason):
            return "could not encode \(type) for cache key \(CacheError.quote(key)): \(reason)"
        case .decodingFailed(let key, let type, let reason):
            return "could not decode cache key \(CacheError.quote(key)) as \(type): \(reason)"
        case .timeout(let op, let server):
            return "\(op) timed out on \(server)"
        case .connectionFailed(let server, let reason):
            return "connection to \(server) failed: \(reason)"
        case .serverError(let server, let message):
            return "\(server) answered with an error: \(message)"
        case .authenticationFailed(let server, let reason):
            return "authentication to \(server) failed: \(reason)"
        case .tls(let server, let failure):
            return "TLS connection to \(server) failed: \(failure)"
        case .poolExhausted(let server, let size):
            return "no connection to \(server) became free in time (pool size \(size))"
        case .closed(let alias):
            return "cache '\(alias)' is closed"
        case .circuitOpen(let alias):
            return "cache '\(alias)': the circuit breaker is open after consecutive server failures; calls skip the server until a probe succeeds"
        case .shutDown(let what):
            return "\(what) has shut down: no calls are accepted, and calls in flight were ended"
        case .invalidArgument(let key, let reason):
            return "invalid argument for cache key \(CacheError.quote(key)): \(reason)"
        }
    }

    /// Quotes a key for messages, escaping control characters so that they stay visible.
    static func quote(_ key: String) -> String {
        var out = "'"
        for scalar in key.unicodeScalars.prefix(300) {
            if scalar.value < 0x20 || scalar.value == 0x7f {
                out += "\\x" + String(scalar.value, radix: 16, uppercase: false).leftPad(2)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        if key.unicodeScalars.count > 300 { out += "..." }
        return out + "'"
    }
}

extension String {
    fileprivate func leftPad(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

extension CacheError {
    /// The case's name (`timeout`, `connectionFailed`, ...), as metrics report it in `error.type`:
    /// no key, server or reason text.
    public var kind: String {
        switch self {
        case .unknownAlias: "unknownAlias"
        case .unknownBackend: "unknownBackend"
        case .invalidSetting: "invalidSetting"
        case .invalidKey: "invalidKey"
        case .missingKey: "missingKey"
        case .notAnInteger: "notAnInteger"
        case .valueTooLarge: "valueTooLarge"
        case .encodingFailed: "encodingFailed"
        case .decodingFailed: "decodingFailed"
        case .timeout: "timeout"
        case .connectionFailed: "connectionFailed"
        case .serverError: "serverError"
        case .authenticationFailed: "authenticationFailed"
        case .tls: "tls"
        case .poolExhausted: "poolExhausted"
        case .closed: "closed"
        case .circuitOpen: "circuitOpen"
        case .shutDown: "shutDown"
        case .invalidArgument: "invalidArgument"
        }
    }
}
