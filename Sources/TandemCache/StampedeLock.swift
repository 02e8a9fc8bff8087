/// Cross-process stampede protection for `getOrSet`: before computing a missing value, the caller
/// takes a short lock through the backend's atomic add (Redis `SET NX PX`, memcached `add`), so that
/// many processes compute a key once. A caller that finds the lock taken polls for the value for at
/// most ``wait``, then computes it itself. The lock expires by itself after ``timeout`` if its holder
/// dies, and is deleted when the holder has stored the value.
///
/// In settings: `STAMPEDE_LOCK_TIMEOUT` (seconds; turns it on for every `getOrSet` of the cache) and
/// `STAMPEDE_LOCK_WAIT` (seconds; default: the timeout). Per call: `getOrSet(key, lock: true)`.
public struct StampedeLock: Sendable, Hashable {
    /// How long the lock lives if its holder dies: the longest a producer is expected to take.
    public var timeout: Duration
    /// How long a caller that finds the lock taken waits for the value before computing it itself.
    public var wait: Duration
    /// How often a waiting caller reads the key.
    public var pollInterval: Duration

    /// A lock; by default 10 s to live, waited on as long, polled every 10 ms.
    public init(timeout: Duration = .seconds(10), wait: Duration? = nil, pollInterval: Duration = .milliseconds(10)) {
        self.timeout = timeout
        self.wait = wait ?? timeout
        self.pollInterval = pollInterval
    }

    /// The key the lock of `made` lives under; nil when that would be too long for memcached's
    /// 250-byte limit (the call then computes without a lock).
    static func key(for made: String) -> String? {
        let k = made + ":tandem-lock"
        return k.utf8.count <= 250 ? k : nil
    }

    /// A token that tells this holder's lock from another's (for logs; the value is not compared).
    static func token() -> StoredValue {
        StoredValue(bytes: Array("locked-\(UInt64.random(in: .min ... .max))".utf8), kind: .string)
    }

    var timeoutSeconds: Double {
        Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
    }
}
