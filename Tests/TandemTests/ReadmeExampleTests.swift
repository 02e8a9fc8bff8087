import Tandem
import TandemTestSupport
import Testing

private struct Page: Codable, Sendable { var title: String }

// Blocking face, for blocking code (a thread of your own, a command-line tool, a sync job).
private func countVisit(_ cache: Cache) throws -> (String?, Int) {
    try cache.set("greeting", "hello", timeout: .seconds(60))
    let greeting: String? = try cache.get("greeting")
    try cache.add("hits", 0)                       // never overwrites
    return (greeting, try cache.incr("hits"))      // atomic; a missing key -> CacheError.missingKey
}

/// The README's example, as written there (keep the two in step): it must compile and do what it says.
@Test func readmeExampleRuns() async throws {
    let caches = try Caches(settings: [
        "default": CacheSettings(backend: "locmem", location: ["readme-example"], timeout: .seconds(300), keyPrefix: "shop"),
        "sessions": CacheSettings(backend: "dummy"),
    ])
    let cache = caches.default

    // The README calls it from blocking code; inside this (async) test the guard would refuse it.
    let refusal = #expect(throws: TandemError.self) { try countVisit(cache) }
    #expect(refusal?.withoutSite == .blockingCallInAsyncContext(operation: "cache 'default' set"))
    let (greeting, hits) = try await onPlainThread { try countVisit(cache) }

    let page = try await cache.async.getOrSet("page:1", timeout: .never) { Page(title: "Home") }
    let many: [String: Int] = try await cache.async.getMany(["a", "b"])

    #expect(greeting == "hello")
    #expect(hits == 1)
    #expect(page.title == "Home")
    #expect(many.isEmpty)
    #expect(cache.makeKey("greeting") == "shop:1:greeting")
    #expect(try await caches["sessions"].async.get("greeting") as String? == nil)
}
