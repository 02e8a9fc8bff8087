/// Errors raised by caches, their settings and their backends. Each names the key, the setting or
/// the server at fault. Passwords never appear in these messages.
///
/// Tell errors apart by ``code``; new codes may come in any release, so a `switch` over codes needs a
/// `default`. The fields a code carries (``key``, ``server``, ``reason``, ...) are set, the others nil:
///
/// ```swift
/// do { try cache.incr("visits") } catch let error as CacheError where error.code == .missingKey { ... }
/// ```
public struct CacheError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What kind of failure a ``CacheError`` is, without its details.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Hashable, Sendable {
            case unknownAlias, unknownBackend, invalidSetting, invalidKey, missingKey, notAnInteger, valueTooLarge, encodingFailed, decodingFailed, timeout, connectionFailed, serverError, authenticationFailed, tls, poolExhausted, closed, circuitOpen, shutDown, invalidArgument
        }
        fileprivate let base: Base

        /// `caches[alias]` named an alias that is not configured.
        public static var unknownAlias: Code { Code(base: .unknownAlias) }
        /// A BACKEND name is not registered.
        public static var unknownBackend: Code { Code(base: .unknownBackend) }
        /// A setting has the wrong type or value. `field` is e.g. `TIMEOUT` or `OPTIONS.MAX_ENTRIES`.
        public static var invalidSetting: Code { Code(base: .invalidSetting) }
        /// A key that the backend cannot store (too long, control characters or spaces for memcached).
        public static var invalidKey: Code { Code(base: .invalidKey) }
        /// `incr`/`decr`/`incrVersion` on a key that does not exist.
        public static var missingKey: Code { Code(base: .missingKey) }
        /// `incr`/`decr` on a value that is not an integer, or an increment that overflows.
        public static var notAnInteger: Code { Code(base: .notAnInteger) }
        /// A value larger than the backend accepts.
        public static var valueTooLarge: Code { Code(base: .valueTooLarge) }
        /// A value could not be encoded for storage.
        public static var encodingFailed: Code { Code(base: .encodingFailed) }
        /// A stored value could not be decoded as the requested type.
        public static var decodingFailed: Code { Code(base: .decodingFailed) }
        /// The backend did not answer in time.
        public static var timeout: Code { Code(base: .timeout) }
        /// The backend could not be reached or the connection broke.
        public static var connectionFailed: Code { Code(base: .connectionFailed) }
        /// The server answered with an error.
        public static var serverError: Code { Code(base: .serverError) }
        /// The server refused the credentials (the password is never part of the message).
        public static var authenticationFailed: Code { Code(base: .authenticationFailed) }
        /// A TLS connection could not be set up: `failure` says whether the server was not trusted, its
        /// certificate named another host, or the handshake failed.
        public static var tls: Code { Code(base: .tls) }
        /// No connection could be borrowed from the pool in time.
        public static var poolExhausted: Code { Code(base: .poolExhausted) }
        /// The cache (or its backend) was closed.
        public static var closed: Code { Code(base: .closed) }
        /// The cache's circuit breaker is open after consecutive server failures: the call skipped the server
        /// (see ``CacheResilience``).
        public static var circuitOpen: Code { Code(base: .circuitOpen) }
        /// A graceful shutdown refused the call, or ended it while it was in flight: the cache was shut down
        /// (`what` names it: `cache 'default'`), or the event loop its connections run on was (`what` names
        /// the server).
        public static var shutDown: Code { Code(base: .shutDown) }
        /// An argument that the operation cannot carry out as asked (for example a delta that has no
        /// negation); refused before any I/O.
        public static var invalidArgument: Code { Code(base: .invalidArgument) }
        /// The code's name (`timeout`, `connectionFailed`, ...).
        public var description: String { base.rawValue }
    }

    /// The failure and its details, one case per code: what Tandem's modules build and read.
    package enum Detail: Equatable, Sendable {
        case unknownAlias(String, known: [String])
        case unknownBackend(alias: String, backend: String, known: [String])
        case invalidSetting(alias: String, field: String, reason: String)
        case invalidKey(key: String, reason: String)
        case missingKey(String)
        case notAnInteger(key: String)
        case valueTooLarge(key: String, size: Int, limit: Int?)
        case encodingFailed(key: String, type: String, reason: String)
        case decodingFailed(key: String, type: String, reason: String)
        case timeout(operation: String, server: String)
        case connectionFailed(server: String, reason: String)
        case serverError(server: String, message: String)
        case authenticationFailed(server: String, reason: String)
        case tls(server: String, failure: TLSFailure)
        case poolExhausted(server: String, size: Int)
        case closed(alias: String)
        case circuitOpen(alias: String)
        case shutDown(String)
        case invalidArgument(key: String, reason: String)
    }

    /// The failure and its details.
    package let detail: Detail

    /// An error of `detail`.
    package init(_ detail: Detail) { self.detail = detail }

    /// What kind of failure this is.
    public var code: Code {
        switch detail {
        case .unknownAlias: .unknownAlias
        case .unknownBackend: .unknownBackend
        case .invalidSetting: .invalidSetting
        case .invalidKey: .invalidKey
        case .missingKey: .missingKey
        case .notAnInteger: .notAnInteger
        case .valueTooLarge: .valueTooLarge
        case .encodingFailed: .encodingFailed
        case .decodingFailed: .decodingFailed
        case .timeout: .timeout
        case .connectionFailed: .connectionFailed
        case .serverError: .serverError
        case .authenticationFailed: .authenticationFailed
        case .tls: .tls
        case .poolExhausted: .poolExhausted
        case .closed: .closed
        case .circuitOpen: .circuitOpen
        case .shutDown: .shutDown
        case .invalidArgument: .invalidArgument
        }
    }

    /// The code's name (`timeout`, `connectionFailed`, ...), as metrics report it in `error.type`: no
    /// key, server or reason text.
    public var kind: String { code.description }

    /// `caches[alias]` named an alias that is not configured.
    public static func unknownAlias(_ alias: String, known: [String]) -> CacheError { CacheError(.unknownAlias(alias, known: known)) }
    /// A BACKEND name is not registered.
    public static func unknownBackend(alias: String, backend: String, known: [String]) -> CacheError { CacheError(.unknownBackend(alias: alias, backend: backend, known: known)) }
    /// A setting has the wrong type or value. `field` is e.g. `TIMEOUT` or `OPTIONS.MAX_ENTRIES`.
    public static func invalidSetting(alias: String, field: String, reason: String) -> CacheError { CacheError(.invalidSetting(alias: alias, field: field, reason: reason)) }
    /// A key that the backend cannot store (too long, control characters or spaces for memcached).
    public static func invalidKey(key: String, reason: String) -> CacheError { CacheError(.invalidKey(key: key, reason: reason)) }
    /// `incr`/`decr`/`incrVersion` on a key that does not exist.
    public static func missingKey(_ key: String) -> CacheError { CacheError(.missingKey(key)) }
    /// `incr`/`decr` on a value that is not an integer, or an increment that overflows.
    public static func notAnInteger(key: String) -> CacheError { CacheError(.notAnInteger(key: key)) }
    /// A value larger than the backend accepts.
    public static func valueTooLarge(key: String, size: Int, limit: Int?) -> CacheError { CacheError(.valueTooLarge(key: key, size: size, limit: limit)) }
    /// A value could not be encoded for storage.
    public static func encodingFailed(key: String, type: String, reason: String) -> CacheError { CacheError(.encodingFailed(key: key, type: type, reason: reason)) }
    /// A stored value could not be decoded as the requested type.
    public static func decodingFailed(key: String, type: String, reason: String) -> CacheError { CacheError(.decodingFailed(key: key, type: type, reason: reason)) }
    /// The backend did not answer in time.
    public static func timeout(operation: String, server: String) -> CacheError { CacheError(.timeout(operation: operation, server: server)) }
    /// The backend could not be reached or the connection broke.
    public static func connectionFailed(server: String, reason: String) -> CacheError { CacheError(.connectionFailed(server: server, reason: reason)) }
    /// The server answered with an error.
    public static func serverError(server: String, message: String) -> CacheError { CacheError(.serverError(server: server, message: message)) }
    /// The server refused the credentials (the password is never part of the message).
    public static func authenticationFailed(server: String, reason: String) -> CacheError { CacheError(.authenticationFailed(server: server, reason: reason)) }
    /// A TLS connection could not be set up: `failure` says whether the server was not trusted, its
    /// certificate named another host, or the handshake failed.
    public static func tls(server: String, failure: TLSFailure) -> CacheError { CacheError(.tls(server: server, failure: failure)) }
    /// No connection could be borrowed from the pool in time.
    public static func poolExhausted(server: String, size: Int) -> CacheError { CacheError(.poolExhausted(server: server, size: size)) }
    /// The cache (or its backend) was closed.
    public static func closed(alias: String) -> CacheError { CacheError(.closed(alias: alias)) }
    /// The cache's circuit breaker is open after consecutive server failures: the call skipped the server
    /// (see ``CacheResilience``).
    public static func circuitOpen(alias: String) -> CacheError { CacheError(.circuitOpen(alias: alias)) }
    /// A graceful shutdown refused the call, or ended it while it was in flight: the cache was shut down
    /// (`what` names it: `cache 'default'`), or the event loop its connections run on was (`what` names the
    /// server).
    public static func shutDown(_ what: String) -> CacheError { CacheError(.shutDown(what)) }
    /// An argument that the operation cannot carry out as asked (for example a delta that has no negation);
    /// refused before any I/O.
    public static func invalidArgument(key: String, reason: String) -> CacheError { CacheError(.invalidArgument(key: key, reason: reason)) }

    /// A human-readable explanation that names what was wrong.
    public var description: String {
        switch detail {
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
    /// The alias of the cache at fault (`unknownAlias`, `unknownBackend`, `invalidSetting`, `closed`,
    /// `circuitOpen`).
    public var alias: String? {
        switch detail {
        case .unknownAlias(let v, _): v
        case .unknownBackend(let v, _, _): v
        case .invalidSetting(let v, _, _): v
        case .closed(let v): v
        case .circuitOpen(let v): v
        default: nil
        }
    }
    /// The cache key at fault (`invalidKey`, `missingKey`, `notAnInteger`, `valueTooLarge`, `encodingFailed`,
    /// `decodingFailed`, `invalidArgument`).
    public var key: String? {
        switch detail {
        case .invalidKey(let v, _): v
        case .missingKey(let v): v
        case .notAnInteger(let v): v
        case .valueTooLarge(let v, _, _): v
        case .encodingFailed(let v, _, _): v
        case .decodingFailed(let v, _, _): v
        case .invalidArgument(let v, _): v
        default: nil
        }
    }
    /// The server at fault, as `host:port` or its location (`timeout`, `connectionFailed`, `serverError`,
    /// `authenticationFailed`, `tls`, `poolExhausted`).
    public var server: String? {
        switch detail {
        case .timeout(_, let v): v
        case .connectionFailed(let v, _): v
        case .serverError(let v, _): v
        case .authenticationFailed(let v, _): v
        case .tls(let v, _): v
        case .poolExhausted(let v, _): v
        default: nil
        }
    }
    /// The setting at fault, e.g. `TIMEOUT` or `OPTIONS.MAX_ENTRIES` (`invalidSetting`).
    public var field: String? {
        switch detail {
        case .invalidSetting(_, let v, _): v
        default: nil
        }
    }
    /// Why, in words: the reason a setting, key, value, argument, connection or login was refused, or the
    /// server's error message.
    public var reason: String? {
        switch detail {
        case .invalidSetting(_, _, let v): v
        case .invalidKey(_, let v): v
        case .encodingFailed(_, _, let v): v
        case .decodingFailed(_, _, let v): v
        case .connectionFailed(_, let v): v
        case .authenticationFailed(_, let v): v
        case .invalidArgument(_, let v): v
        case .serverError(_, let v): v
        default: nil
        }
    }
    /// The Swift type a value was to be encoded from or decoded as (`encodingFailed`, `decodingFailed`).
    public var typeName: String? {
        switch detail {
        case .encodingFailed(_, let v, _): v
        case .decodingFailed(_, let v, _): v
        default: nil
        }
    }
    /// The operation that ran out of time (`timeout`).
    public var operation: String? {
        switch detail {
        case .timeout(let v, _): v
        default: nil
        }
    }
    /// The BACKEND name that is not registered (`unknownBackend`).
    public var backend: String? {
        switch detail {
        case .unknownBackend(_, let v, _): v
        default: nil
        }
    }
    /// The aliases or backends that are configured (`unknownAlias`, `unknownBackend`); empty for other codes.
    public var known: [String] {
        switch detail {
        case .unknownAlias(_, let v): v
        case .unknownBackend(_, _, let v): v
        default: []
        }
    }
    /// A value's size in bytes (`valueTooLarge`) or a pool's size (`poolExhausted`).
    public var size: Int? {
        switch detail {
        case .valueTooLarge(_, let v, _): v
        case .poolExhausted(_, let v): v
        default: nil
        }
    }
    /// The largest value the backend accepts, in bytes, where it says (`valueTooLarge`).
    public var limit: Int? {
        switch detail {
        case .valueTooLarge(_, _, let v): v
        default: nil
        }
    }
    /// How a TLS connection failed (`tls`).
    public var tlsFailure: TLSFailure? {
        switch detail {
        case .tls(_, let v): v
        default: nil
        }
    }
    /// What shut down: `cache 'default'`, or a server whose event loop did (`shutDown`).
    public var subject: String? {
        switch detail {
        case .shutDown(let v): v
        default: nil
        }
    }
}
