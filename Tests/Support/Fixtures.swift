import Foundation
import Tandem

/// LocMem on a store of its own, with a manual clock: expiry is tested without sleeping.
public struct LocMemFixture: CacheFixture {
    public let location = "test-\(UUID().uuidString)"
    public let clock = ManualClock()
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
