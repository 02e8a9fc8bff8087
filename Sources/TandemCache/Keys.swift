import Logging
import Synchronization

/// Makes the final key from a user key, the cache's KEY_PREFIX and a version. The default makes
/// `"\(prefix):\(version):\(key)"`, as Django does.
public typealias KeyFunction = @Sendable (_ key: String, _ prefix: String, _ version: Int) -> String

/// Key making and validation, done once in the front for both faces and every backend.
struct KeyMaker: Sendable {
    let prefix: String
    let defaultVersion: Int
    let function: KeyFunction?
    let strictness: KeyStrictness
    /// `"prefix:version:"` for the default version, precomputed for the hot path.
    private let defaultHead: String
    private let warned: WarnedKeys
    /// The bytes of `defaultHead`, and whether they contain nothing memcached would refuse.
    private let headBytes: [UInt8]
    private let headIsClean: Bool

    /// The longest key memcached accepts.
    static let maxKeyLength = 250

    init(prefix: String, defaultVersion: Int, function: KeyFunction?, strictness: KeyStrictness, logger: Logger) {
        self.prefix = prefix
        self.defaultVersion = defaultVersion
        self.function = function
        self.strictness = strictness
        self.defaultHead = "\(prefix):\(defaultVersion):"
        self.headBytes = Array(defaultHead.utf8)
        self.headIsClean = !headBytes.contains { $0 <= 0x20 || $0 == 0x7f }
        self.warned = WarnedKeys(logger: logger)
    }

    /// The final key for `key` at `version` (the cache's VERSION when nil).
    @inline(__always)
    func make(_ key: String, version: Int?) -> String {
        if let function { return function(key, prefix, version ?? defaultVersion) }
        if let v = version, v != defaultVersion { return "\(prefix):\(v):\(key)" }
        return defaultHead + key
    }

    /// Makes and validates a key: strict backends throw, lenient ones warn once per key.
    @inline(__always)
    func validated(_ key: String, version: Int?) throws -> String {
        let made: String
        let clean: Bool
        if function == nil, version == nil || version == defaultVersion {
            (made, clean) = joinDefault(key)
        } else {
            made = make(key, version: version)
            clean = KeyMaker.problem(made) == nil
        }
        if !clean, let reason = KeyMaker.problem(made) {
            switch strictness {
            case .strict: throw CacheError.invalidKey(key: made, reason: reason)
            case .lenient: warned.warn(made, reason: reason)
            }
        }
        return made
    }

    /// `defaultHead + key` in one allocation, checking the key's bytes while they are copied.
    /// Returns whether the result is a key memcached could store.
    private func joinDefault(_ key: String) -> (String, Bool) {
        var key = key
        let headClean = headIsClean
        return key.withUTF8 { keyBytes -> (String, Bool) in
            let total = headBytes.count + keyBytes.count
            var bad = !headClean || total > KeyMaker.maxKeyLength || total == 0
            let s = String(unsafeUninitializedCapacity: total) { out in
                var i = 0
                for b in headBytes { out[i] = b; i += 1 }
                for b in keyBytes {
                    bad = bad || b <= 0x20 || b == 0x7f
                    out[i] = b
                    i += 1
                }
                return total
            }
            return (s, !bad)
        }
    }
    /// Why memcached could not store `key`, or nil when it could.
    static func problem(_ key: String) -> String? {
        var length = 0
        for byte in key.utf8 {
            if byte <= 0x20 || byte == 0x7f {
                return byte == 0x20 ? "it contains a space" : "it contains the control character 0x\(String(byte, radix: 16))"
            }
            length += 1
        }
        if length > maxKeyLength { return "it is \(length) bytes long; the limit is \(maxKeyLength)" }
        if length == 0 { return "it is empty" }
        return nil
    }
}

/// Why memcached could not take `key` (too long, empty, a space or a control character), or nil: the
/// front's rule (``KeyMaker``), for a backend that checks again right before a key reaches the wire.
package func memcachedKeyProblem(_ key: String) -> String? { KeyMaker.problem(key) }

/// Remembers which invalid keys were already warned about (bounded, so a flood of bad keys cannot grow it forever).
final class WarnedKeys: Sendable {
    private let seen = Mutex<Set<String>>([])
    private let logger: Logger
    private static let limit = 4096

    init(logger: Logger) { self.logger = logger }

    func warn(_ key: String, reason: String) {
        let first = seen.locked { set -> Bool in
            if set.count >= WarnedKeys.limit { set.removeAll() }
            return set.insert(key).inserted
        }
        if first {
            logger.warning(
                "cache key would be rejected by memcached",
                metadata: ["key": "\(CacheError.quote(key))", "reason": "\(reason)"])
        }
    }
}
