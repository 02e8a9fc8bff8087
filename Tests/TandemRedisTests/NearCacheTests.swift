@_spi(Backend) import TandemCache
@testable import TandemRedis
import Testing
import Foundation

/// The near cache's rules without a server: a reply is kept only if its mark survived, local writes
/// and invalidations drop marks, nothing is kept while tracking is down, expiry and the memory bound.
struct NearCacheTests {
    private func value(_ s: String) -> StoredValue { StoredValue(bytes: Array(s.utf8), kind: .string) }

    private func tracking(_ settings: NearCacheSettings = NearCacheSettings()) -> NearCache {
        let near = NearCache(settings: settings, servers: 2)
        near.trackingStarted(server: 0, id: 7)
        return near
    }

    private func isHit(_ near: NearCache, _ key: String) -> StoredValue?? {
        if case .hit(let v) = near.lookup(key) { return .some(v) }
        return .none
    }

    @Test func aReplyWhoseMarkSurvivedIsKeptAndServed() throws {
        let near = tracking()
        let mark = try #require(near.mark("k", server: 0))
        #expect(mark.redirect == 7)
        near.store(mark, value: value("v"), remainingMilliseconds: -1)
        #expect(isHit(near, "k") == .some(value("v")))
        #expect(near.statistics.hits == 1)
    }

    @Test func anAbsentKeyIsKeptAsAbsent() throws {
        let near = tracking()
        near.store(try #require(near.mark("k", server: 0)), value: nil, remainingMilliseconds: -2)
        #expect(isHit(near, "k") == .some(nil))
    }

    @Test func aValueWhoseKeyVanishedBetweenGetAndPTTLIsNotKept() throws {
        let near = tracking()
        near.store(try #require(near.mark("k", server: 0)), value: value("v"), remainingMilliseconds: -2)
        #expect(isHit(near, "k") == nil)
    }

    @Test func anInvalidationThatCrossesTheReadDropsTheMark() throws {
        let near = tracking()
        let mark = try #require(near.mark("k", server: 0))
        near.invalidate([Array("k".utf8)])
        near.store(mark, value: value("old"), remainingMilliseconds: -1)
        #expect(isHit(near, "k") == nil, "a reply that crossed an invalidation of its key was kept")
        #expect(near.statistics.invalidations == 1)
    }

    @Test func aLocalWriteDropsTheKeyAndTheMarksOfReadsInFlight() throws {
        let near = tracking()
        near.store(try #require(near.mark("k", server: 0)), value: value("v1"), remainingMilliseconds: -1)
        let inFlight = try #require(near.mark("k", server: 0))
        near.drop(["k"])
        #expect(isHit(near, "k") == nil)
        near.store(inFlight, value: value("v1"), remainingMilliseconds: -1)
        #expect(isHit(near, "k") == nil, "a read sent before this process's write was kept after it")
    }

    @Test func onlyTheLatestMarkOfAKeyStores() throws {
        let near = tracking()
        let first = try #require(near.mark("k", server: 0))
        let second = try #require(near.mark("k", server: 0))
        near.store(first, value: value("a"), remainingMilliseconds: -1)
        #expect(isHit(near, "k") == nil)
        near.store(second, value: value("b"), remainingMilliseconds: -1)
        #expect(isHit(near, "k") == .some(value("b")))
    }

    @Test func nothingIsKeptFromAServerWhoseTrackingIsDownAndLosingItDropsEverything() throws {
        let near = tracking()
        #expect(near.mark("k", server: 1) == nil, "server 1 has no invalidation connection yet")
        near.store(try #require(near.mark("k", server: 0)), value: value("v"), remainingMilliseconds: -1)
        let inFlight = try #require(near.mark("j", server: 0))
        near.trackingLost(server: 0)
        #expect(isHit(near, "k") == nil)
        #expect(near.mark("k", server: 0) == nil)
        near.store(inFlight, value: value("v"), remainingMilliseconds: -1)
        #expect(isHit(near, "j") == nil)
        #expect(near.statistics.flushes == 1)
    }

    @Test func aFlushDropsEverythingAndEveryMark() throws {
        let near = tracking()
        near.store(try #require(near.mark("a", server: 0)), value: value("1"), remainingMilliseconds: -1)
        let inFlight = try #require(near.mark("b", server: 0))
        near.flush()
        near.store(inFlight, value: value("2"), remainingMilliseconds: -1)
        #expect(isHit(near, "a") == nil)
        #expect(isHit(near, "b") == nil)
        #expect(near.usage.entries == 0 && near.usage.bytes == 0)
    }

    @Test func aCopyExpiresWithItsKey() throws {
        let near = tracking()
        near.store(try #require(near.mark("k", server: 0)), value: value("v"), remainingMilliseconds: 0)
        #expect(isHit(near, "k") == nil, "a key with no time left was kept")
        near.store(try #require(near.mark("k", server: 0)), value: value("v"), remainingMilliseconds: 1)
        let deadline = ContinuousClock.now + .seconds(5)
        while isHit(near, "k") != nil && ContinuousClock.now < deadline { usleepSafely(1000) }
        #expect(isHit(near, "k") == nil, "a copy outlived its key's 1 ms")
    }

    @Test func aRemainingLifetimeBeyondWhatNanosecondsHoldIsBoundedByTheTTL() throws {
        // PTTL of a key that expires in a few hundred thousand years: kept (for TTL), no overflow trap.
        let near = tracking()
        near.store(try #require(near.mark("k", server: 0)), value: value("v"), remainingMilliseconds: Int64.max / 2)
        #expect(isHit(near, "k") == .some(value("v")))
    }

    @Test func theLocalTTLBoundsACopyOfAKeyWithoutExpiry() throws {
        var settings = NearCacheSettings()
        settings.ttlNanos = 1_000_000
        let near = tracking(settings)
        near.store(try #require(near.mark("k", server: 0)), value: value("v"), remainingMilliseconds: -1)
        let deadline = ContinuousClock.now + .seconds(5)
        while isHit(near, "k") != nil && ContinuousClock.now < deadline { usleepSafely(1000) }
        #expect(isHit(near, "k") == nil)
    }

    @Test func entriesAndBytesStayWithinTheirBounds() throws {
        var settings = NearCacheSettings()
        settings.maxEntries = 50
        settings.maxBytes = 4096
        let near = tracking(settings)
        for i in 0..<1000 {
            let key = "key-\(i)"
            near.store(try #require(near.mark(key, server: 0)), value: value(String(repeating: "x", count: i % 100)), remainingMilliseconds: -1)
            let usage = near.usage
            #expect(usage.entries <= 50 && usage.bytes <= 4096, "after \(i + 1) stores: \(usage)")
        }
        #expect(near.statistics.evictions > 900)
        // The most recent key is still there; a value larger than the whole budget is never kept.
        #expect(isHit(near, "key-999") != nil)
        near.store(try #require(near.mark("huge", server: 0)), value: value(String(repeating: "x", count: 5000)), remainingMilliseconds: -1)
        #expect(isHit(near, "huge") == nil)
    }

    @Test func settingsAreCheckedAndNamed() throws {
        func parse(_ v: SettingValue) throws -> NearCacheSettings? {
            try NearCacheSettings.parse(BackendOptions(alias: "a", values: ["NEAR_CACHE": v]))
        }
        #expect(try parse(.bool(true)) == NearCacheSettings())
        #expect(try parse(.bool(false)) == nil)
        let s = try #require(try parse(.dict(["MAX_ENTRIES": .int(10), "MAX_BYTES": .int(2048), "TTL": .double(1.5), "MODE": .string("broadcast")])))
        #expect(s.maxEntries == 10 && s.maxBytes == 2048 && s.ttlNanos == 1_500_000_000 && s.mode == .broadcast)
        func failure(_ v: SettingValue) -> String {
            do { _ = try parse(v); return "no error" } catch { return "\(error)" }
        }
        #expect(failure(.dict(["MAX_ENTRIE": .int(1)])).contains("OPTIONS.NEAR_CACHE.MAX_ENTRIE"))
        #expect(failure(.dict(["MODE": .string("bcast")])).contains("OPTIONS.NEAR_CACHE.MODE"))
        #expect(failure(.dict(["MAX_ENTRIES": .int(0)])).contains("OPTIONS.NEAR_CACHE.MAX_ENTRIES"))
        #expect(failure(.dict(["TTL": .string("1")])).contains("OPTIONS.NEAR_CACHE.TTL"))
        #expect(failure(.string("yes")).contains("OPTIONS.NEAR_CACHE"))
    }
}

/// Sleeps the calling (test) thread briefly.
private func usleepSafely(_ microseconds: UInt32) {
    _ = usleep(microseconds)
}
