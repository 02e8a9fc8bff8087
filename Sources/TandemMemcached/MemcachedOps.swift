import CMemcached
import Foundation
@_spi(Backend) import TandemCache

/// The memcached operations on one borrowed handle, shared by the blocking face and the async workers.
struct MemcachedOps {
    let handle: UnsafeMutablePointer<memcached_st>
    let server: String

    /// Memcached's limit for relative expiration times; longer ones are sent as absolute Unix time.
    static let thirtyDays = 60 * 60 * 24 * 30

    /// `.never` is 0. memcached counts whole seconds on a clock that ticks once a second, so an item
    /// sent with N seconds lives between N-1 and N seconds; Tandem sends ceil(timeout) + 1 so that a
    /// key lives at least its timeout (and at most one second longer). Over 30 days the time is sent
    /// as an absolute Unix time, as memcached requires.
    static func expiration(_ e: CacheExpiry) -> time_t {
        switch e {
        case .never: return 0
        case .after(let s):
            let secs = Int(min(s, 1e12).rounded(.up)) + 1
            return secs > thirtyDays ? time(nil) + secs : secs
        }
    }

    func message(_ rc: memcached_return_t) -> String {
        let last = memcached_last_error_message(handle).map { String(cString: $0) }
        return last ?? String(cString: memcached_strerror(handle, rc))
    }

    /// The typed error for a failed call.
    func error(_ rc: memcached_return_t, operation: String) -> CacheError {
        switch rc {
        case MEMCACHED_TIMEOUT:
            return .timeout(operation: "memcached \(operation)", server: server)
        case MEMCACHED_CONNECTION_FAILURE, MEMCACHED_SERVER_MARKED_DEAD, MEMCACHED_SERVER_TEMPORARILY_DISABLED,
             MEMCACHED_NO_SERVERS, MEMCACHED_ERRNO, MEMCACHED_WRITE_FAILURE, MEMCACHED_READ_FAILURE,
             MEMCACHED_UNKNOWN_READ_FAILURE, MEMCACHED_CONNECTION_SOCKET_CREATE_FAILURE, MEMCACHED_HOST_LOOKUP_FAILURE,
             MEMCACHED_SERVER_ERROR where message(rc).lowercased().contains("connect"):
            return .connectionFailed(server: server, reason: message(rc))
        case MEMCACHED_AUTH_FAILURE, MEMCACHED_AUTH_PROBLEM:
            return .authenticationFailed(server: server, reason: String(cString: memcached_strerror(handle, rc)))
        default:
            return .serverError(server: server, message: message(rc))
        }
    }

    private func isConnectionProblem(_ rc: memcached_return_t) -> Bool {
        let code = error(rc, operation: "").code
        return code == .connectionFailed || code == .timeout
    }

    func get(_ key: String) throws -> StoredValue? {
        var length = 0
        var flags: UInt32 = 0
        var rc = MEMCACHED_SUCCESS
        let value = key.withCString { memcached_get(handle, $0, strlen($0), &length, &flags, &rc) }
        defer { free(value) }
        if rc == MEMCACHED_NOTFOUND { return nil }
        guard rc == MEMCACHED_SUCCESS else { throw error(rc, operation: "get") }
        let bytes = value.map { v in v.withMemoryRebound(to: UInt8.self, capacity: length) { Array(UnsafeBufferPointer(start: $0, count: length)) } } ?? []
        return StoredValue(bytes: bytes, kind: ValueKind(rawValue: flags))
    }

    /// One `memcached_mget` for every key, then `memcached_fetch_result` until it is done.
    func getMany(_ keys: [String]) throws -> [String: StoredValue] {
        if keys.isEmpty { return [:] }
        let cKeys = keys.map { strdup($0) }
        defer { cKeys.forEach { free($0) } }
        var lengths = cKeys.map { strlen($0!) }
        var pointers: [UnsafePointer<CChar>?] = cKeys.map { UnsafePointer($0) }
        let rc = pointers.withUnsafeMutableBufferPointer { p in
            lengths.withUnsafeMutableBufferPointer { l in memcached_mget(handle, p.baseAddress, l.baseAddress, keys.count) }
        }
        guard rc == MEMCACHED_SUCCESS || rc == MEMCACHED_SOME_ERRORS else { throw error(rc, operation: "get_many") }
        var out: [String: StoredValue] = [:]
        try fetchResults(operation: "get_many") { key, value, _ in out[key] = value }
        return out
    }

    /// Reads the results of the `memcached_mget` just sent: each key, its value and its CAS (0 unless
    /// the handle asks for CAS). A connection problem with no result at all throws.
    private func fetchResults(operation: String, _ each: (String, StoredValue, UInt64) -> Void) throws {
        // The result lives in memory we own: libmemcached frees results *it* allocated when the fetch
        // loop ends, so a result it allocated would be freed twice. Ours it only resets; we free its
        // contents once (memcached_result_free) and the struct once (deallocate).
        let storage = UnsafeMutablePointer<memcached_result_st>.allocate(capacity: 1)
        defer { storage.deallocate() }
        guard let result = memcached_result_create(handle, storage) else { throw CacheError.serverError(server: server, message: "out of memory") }
        defer { memcached_result_free(result) }
        var frc = MEMCACHED_SUCCESS
        var any = false
        while memcached_fetch_result(handle, result, &frc) != nil {
            let klen = memcached_result_key_length(result)
            guard let kp = memcached_result_key_value(result) else { continue }
            let key = String(decoding: UnsafeRawBufferPointer(start: kp, count: klen), as: UTF8.self)
            let vlen = memcached_result_length(result)
            let bytes = memcached_result_value(result).map { Array(UnsafeRawBufferPointer(start: $0, count: vlen)) } ?? []
            any = true
            each(key, StoredValue(bytes: bytes, kind: ValueKind(rawValue: memcached_result_flags(result))), memcached_result_cas(result))
        }
        if !any, frc != MEMCACHED_END, frc != MEMCACHED_SUCCESS, frc != MEMCACHED_NOTFOUND, isConnectionProblem(frc) {
            throw error(frc, operation: operation)
        }
    }

    /// An expiration memcached reads as an absolute time before it started: the item expires at once.
    /// A compare-and-swap with it is a delete that happens only if nobody wrote the item since it was
    /// read (libmemcached has no delete with a CAS).
    static let expireNow = time_t(thirtyDays + 1)

    /// Deletes `key` if it holds `expected`'s bytes: a get with its CAS, then a compare-and-swap with
    /// ``expireNow``, which fails if anyone wrote the key in between.
    func deleteIfEqual(_ key: String, _ expected: StoredValue) throws -> Bool {
        let previous = memcached_behavior_get(handle, MEMCACHED_BEHAVIOR_SUPPORT_CAS)
        _ = memcached_behavior_set(handle, MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1)
        defer { _ = memcached_behavior_set(handle, MEMCACHED_BEHAVIOR_SUPPORT_CAS, previous) }
        var found: (StoredValue, UInt64)?
        let rc = key.withCString { k -> memcached_return_t in
            var p: UnsafePointer<CChar>? = UnsafePointer(k)
            var length = strlen(k)
            return memcached_mget(handle, &p, &length, 1)
        }
        guard rc == MEMCACHED_SUCCESS || rc == MEMCACHED_SOME_ERRORS else { throw error(rc, operation: "delete") }
        try fetchResults(operation: "delete") { k, value, cas in if k == key { found = (value, cas) } }
        guard let (value, cas) = found, cas != 0, value.bytes == expected.bytes else { return false }
        let swap = key.withCString { k in memcached_cas(handle, k, strlen(k), "", 0, MemcachedOps.expireNow, value.kind.rawValue, cas) }
        switch swap {
        case MEMCACHED_SUCCESS, MEMCACHED_STORED: return true
        case MEMCACHED_DATA_EXISTS, MEMCACHED_NOTFOUND, MEMCACHED_NOTSTORED: return false
        default: throw error(swap, operation: "delete")
        }
    }

    /// Stores a value. Too large: ``CacheError/valueTooLarge(key:size:limit:)``, and the old value is
    /// deleted so that a stale value is not served (as Django does).
    func set(_ key: String, _ value: StoredValue, expiry: CacheExpiry, mode: SetMode) throws -> Bool {
        let exp = MemcachedOps.expiration(expiry)
        let rc = key.withCString { k in
            value.bytes.withUnsafeBufferPointer { v in
                let vp = UnsafeRawPointer(v.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self)
                return mode == .add
                    ? memcached_add(handle, k, strlen(k), vp, v.count, exp, value.kind.rawValue)
                    : memcached_set(handle, k, strlen(k), vp, v.count, exp, value.kind.rawValue)
            }
        }
        switch rc {
        case MEMCACHED_SUCCESS, MEMCACHED_STORED: return true
        case MEMCACHED_NOTSTORED, MEMCACHED_DATA_EXISTS: return false
        case MEMCACHED_E2BIG:
            _ = try? delete(key)
            throw CacheError.valueTooLarge(key: key, size: value.bytes.count, limit: nil)
        default:
            if message(rc).lowercased().contains("too large") {
                _ = try? delete(key)
                throw CacheError.valueTooLarge(key: key, size: value.bytes.count, limit: nil)
            }
            throw error(rc, operation: mode == .add ? "add" : "set")
        }
    }

    func delete(_ key: String) throws -> Bool {
        let rc = key.withCString { memcached_delete(handle, $0, strlen($0), 0) }
        switch rc {
        case MEMCACHED_SUCCESS, MEMCACHED_DELETED: return true
        case MEMCACHED_NOTFOUND: return false
        default: throw error(rc, operation: "delete")
        }
    }

    /// memcached's own incr/decr, in one atomic command whatever the delta (the `_by_key` calls take a
    /// 64-bit delta; the key is its own group key, so the server is the one the key hashes to). A
    /// decrement never goes below 0 (memcached's rule). memcached counts in 64 unsigned bits: a result
    /// above `Int64.max` (only reachable from a value another client stored) is undone with the
    /// opposite command and reported as ``CacheError/notAnInteger(key:)``.
    func incr(_ key: String, by delta: Int64) throws -> Int64 {
        var value: UInt64 = 0
        let rc = apply(key, delta: delta, &value)
        switch rc {
        case MEMCACHED_SUCCESS: break
        case MEMCACHED_NOTFOUND: throw CacheError.missingKey(key)
        case MEMCACHED_CLIENT_ERROR, MEMCACHED_PROTOCOL_ERROR, MEMCACHED_INVALID_ARGUMENTS, MEMCACHED_ERROR:
            throw CacheError.notAnInteger(key: key)
        default:
            if message(rc).lowercased().contains("non-numeric") { throw CacheError.notAnInteger(key: key) }
            throw error(rc, operation: "incr")
        }
        switch MemcachedCounter.outcome(value, delta: delta) {
        case .value(let v): return v
        case .overflowed(let undo):
            if let undo {
                var undone: UInt64 = 0
                _ = apply(key, delta: undo, &undone)
            }
            throw CacheError.notAnInteger(key: key)
        }
    }

    private func apply(_ key: String, delta: Int64, _ value: inout UInt64) -> memcached_return_t {
        key.withCString { k in
            let n = strlen(k)
            return delta >= 0 ? memcached_increment_by_key(handle, k, n, k, n, delta.magnitude, &value)
                              : memcached_decrement_by_key(handle, k, n, k, n, delta.magnitude, &value)
        }
    }

    func touch(_ key: String, expiry: CacheExpiry) throws -> Bool {
        let rc = key.withCString { memcached_touch(handle, $0, strlen($0), MemcachedOps.expiration(expiry)) }
        switch rc {
        case MEMCACHED_SUCCESS: return true
        case MEMCACHED_NOTFOUND: return false
        default: throw error(rc, operation: "touch")
        }
    }

    func hasKey(_ key: String) throws -> Bool {
        let rc = key.withCString { memcached_exist(handle, $0, strlen($0)) }
        switch rc {
        case MEMCACHED_SUCCESS: return true
        case MEMCACHED_NOTFOUND: return false
        default: throw error(rc, operation: "has_key")
        }
    }

    /// flush_all on every server (every key on them, as Django's memcached clear does).
    func clear() throws {
        let rc = memcached_flush(handle, 0)
        guard rc == MEMCACHED_SUCCESS else { throw error(rc, operation: "flush_all") }
    }
}
