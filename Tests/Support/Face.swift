import Foundation
import Tandem

/// Which face of a cache a suite exercises.
public enum FaceKind: String, Sendable, CaseIterable, CustomStringConvertible {
    case blocking, async
    public var description: String { rawValue }
}

/// One cache seen through one face, with every operation as an `async` function, so that each
/// behaviour of the shared suite is written once and runs against both faces.
///
/// The blocking face runs where async code hands blocking work to (`Bridge.offload`, Tandem's
/// `sync_to_async`: a bounded pool of reused threads), off the task: the guard refuses a blocking
/// call inside a Swift task on every backend.
public struct Face: Sendable {
    public let cache: Cache
    public let kind: FaceKind

    public init(_ cache: Cache, _ kind: FaceKind) {
        self.cache = cache
        self.kind = kind
    }

    private func blocking<R: Sendable>(_ body: @escaping @Sendable (Cache) throws -> R) async throws -> R {
        let c = cache
        return try await Bridge.offload { try body(c) }
    }

    public func get<V: CacheValue>(_ key: String, as: V.Type = V.self, version: Int? = nil) async throws -> V? {
        switch kind {
        case .async: return try await cache.async.get(key, version: version)
        case .blocking: return try await blocking { try $0.get(key, version: version) as V? }
        }
    }

    public func get<V: CacheValue>(_ key: String, default d: V, version: Int? = nil) async throws -> V {
        switch kind {
        case .async: return try await cache.async.get(key, default: d, version: version)
        case .blocking: return try await blocking { try $0.get(key, default: d, version: version) }
        }
    }

    public func set<V: CacheValue>(_ key: String, _ value: V, timeout: CacheTimeout = .default, version: Int? = nil) async throws {
        switch kind {
        case .async: try await cache.async.set(key, value, timeout: timeout, version: version)
        case .blocking: try await blocking { try $0.set(key, value, timeout: timeout, version: version) }
        }
    }

    @discardableResult
    public func add<V: CacheValue>(_ key: String, _ value: V, timeout: CacheTimeout = .default, version: Int? = nil) async throws -> Bool {
        switch kind {
        case .async: return try await cache.async.add(key, value, timeout: timeout, version: version)
        case .blocking: return try await blocking { try $0.add(key, value, timeout: timeout, version: version) }
        }
    }

    public func getOrSet<V: CacheValue>(_ key: String, timeout: CacheTimeout = .default, version: Int? = nil,
                                        _ make: @escaping @Sendable () throws -> V) async throws -> V {
        switch kind {
        case .async: return try await cache.async.getOrSet(key, timeout: timeout, version: version) { try make() }
        case .blocking: return try await blocking { try $0.getOrSet(key, timeout: timeout, version: version, make) }
        }
    }

    public func getMany<V: CacheValue>(_ keys: [String], as: V.Type = V.self, version: Int? = nil) async throws -> [String: V] {
        switch kind {
        case .async: return try await cache.async.getMany(keys, version: version)
        case .blocking: return try await blocking { try $0.getMany(keys, version: version) as [String: V] }
        }
    }

    @discardableResult
    public func setMany<V: CacheValue>(_ items: [String: V], timeout: CacheTimeout = .default, version: Int? = nil) async throws -> [String] {
        switch kind {
        case .async: return try await cache.async.setMany(items, timeout: timeout, version: version)
        case .blocking: return try await blocking { try $0.setMany(items, timeout: timeout, version: version) }
        }
    }

    @discardableResult
    public func delete(_ key: String, version: Int? = nil) async throws -> Bool {
        switch kind {
        case .async: return try await cache.async.delete(key, version: version)
        case .blocking: return try await blocking { try $0.delete(key, version: version) }
        }
    }

    public func deleteMany(_ keys: [String], version: Int? = nil) async throws {
        switch kind {
        case .async: try await cache.async.deleteMany(keys, version: version)
        case .blocking: try await blocking { try $0.deleteMany(keys, version: version) }
        }
    }

    @discardableResult
    public func incr(_ key: String, by delta: Int = 1, version: Int? = nil) async throws -> Int {
        switch kind {
        case .async: return try await cache.async.incr(key, by: delta, version: version)
        case .blocking: return try await blocking { try $0.incr(key, by: delta, version: version) }
        }
    }

    @discardableResult
    public func decr(_ key: String, by delta: Int = 1, version: Int? = nil) async throws -> Int {
        switch kind {
        case .async: return try await cache.async.decr(key, by: delta, version: version)
        case .blocking: return try await blocking { try $0.decr(key, by: delta, version: version) }
        }
    }

    @discardableResult
    public func touch(_ key: String, timeout: CacheTimeout = .default, version: Int? = nil) async throws -> Bool {
        switch kind {
        case .async: return try await cache.async.touch(key, timeout: timeout, version: version)
        case .blocking: return try await blocking { try $0.touch(key, timeout: timeout, version: version) }
        }
    }

    public func hasKey(_ key: String, version: Int? = nil) async throws -> Bool {
        switch kind {
        case .async: return try await cache.async.hasKey(key, version: version)
        case .blocking: return try await blocking { try $0.hasKey(key, version: version) }
        }
    }

    @discardableResult
    public func incrVersion(_ key: String, by delta: Int = 1, version: Int? = nil) async throws -> Int {
        switch kind {
        case .async: return try await cache.async.incrVersion(key, by: delta, version: version)
        case .blocking: return try await blocking { try $0.incrVersion(key, by: delta, version: version) }
        }
    }

    @discardableResult
    public func decrVersion(_ key: String, by delta: Int = 1, version: Int? = nil) async throws -> Int {
        switch kind {
        case .async: return try await cache.async.decrVersion(key, by: delta, version: version)
        case .blocking: return try await blocking { try $0.decrVersion(key, by: delta, version: version) }
        }
    }

    public func clear() async throws {
        switch kind {
        case .async: try await cache.async.clear()
        case .blocking: try await blocking { try $0.clear() }
        }
    }
}
