import Foundation
import Tandem

/// LocMem on a store of its own, with a manual clock: expiry is tested without sleeping.
public struct LocMemFixture: CacheFixture {
    public let location = "test-\(UUID().uuidString)"
    package let clock = ManualClock()
    public init() {}
    public var stores: Bool { true }
    public var culls: Bool { true }
    public var strictKeys: Bool { false }
    public func makeCache(_ configure: (inout CacheSettings) -> Void) throws -> Cache {
        var s = CacheSettings(backend: "locmem", location: [location])
        configure(&s)
        return try BackendRegistry.builtin(locMemClock: .manual(clock)).makeCache(alias: "test", settings: s, loop: nil)
    }
    public func passTime(_ seconds: Double) async throws { clock.advance(by: seconds) }
}

/// The Dummy backend: stores nothing.
public struct DummyFixture: CacheFixture {
    public init() {}
    public var stores: Bool { false }
    public var culls: Bool { false }
    public var strictKeys: Bool { false }
    public func makeCache(_ configure: (inout CacheSettings) -> Void) throws -> Cache {
        var s = CacheSettings(backend: "dummy")
        configure(&s)
        return try BackendRegistry.builtin.makeCache(alias: "test", settings: s, loop: nil)
    }
    public func passTime(_ seconds: Double) async throws {}
}

/// Sets each key to `"v-" + key` and reads it back, one task per key, all at once: how many tasks
/// read something other than their own value (0 when every call got its own answer).
public func tasksNotReadingTheirOwnWrites(_ cache: Cache, _ keys: [String]) async throws -> Int {
    try await withThrowingTaskGroup(of: Bool.self) { tasks in
        for k in keys {
            tasks.addTask {
                try await cache.async.set(k, "v-" + k)
                return try await cache.async.get(k) as String? != "v-" + k
            }
        }
        return try await tasks.reduce(0) { $0 + ($1 ? 1 : 0) }
    }
}
