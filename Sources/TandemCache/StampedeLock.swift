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

    /// A token that tells this holder's lock from another's: the release deletes the lock only while it
    /// still holds the token, so a holder that overran ``timeout`` never frees the next holder's lock.
    static func token() -> StoredValue {
        StoredValue(bytes: Array("locked-\(UInt64.random(in: .min ... .max))".utf8), kind: .string)
    }

    var timeoutSeconds: Double {
        Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
    }
}

/// A stampede lock this caller took: its key and the token stored under it.
struct HeldLock: Sendable {
    let key: String
    let token: StoredValue
}

extension CacheCore {
    /// Releases `held` if this caller still holds it: one compare-and-delete on the server, never
    /// failing open. A lock that expired and was taken by another caller is left to that caller. A
    /// release that fails is counted and logged at warning (nothing is thrown: the value is computed
    /// and stored); the lock then expires after its timeout, and until then other callers wait for it
    /// at most their `wait`.
    func release(_ held: HeldLock) {
        do {
            if try !run(.delete, key: held.key, { try backend.deleteIfEqual(held.key, held.token) }) { lockLost(held) }
        } catch {
            releaseFailed(held, error)
        }
    }

    /// ``release(_:)`` for the async face.
    func release(_ held: HeldLock) async {
        do {
            if try await !runAsync(.delete, key: held.key, { try await backend.asyncDeleteIfEqual(held.key, held.token) }) { lockLost(held) }
        } catch {
            releaseFailed(held, error)
        }
    }

    private func lockLost(_ held: HeldLock) {
        logger.info("stampede lock expired before its holder finished; another caller's lock was left alone",
                    metadata: ["lock": "\(held.key)"])
    }

    private func releaseFailed(_ held: HeldLock, _ error: any Error) {
        logger.warning("stampede lock not released: other callers wait for it until it expires",
                       metadata: ["lock": "\(held.key)", "error": "\(error)"])
    }
}
