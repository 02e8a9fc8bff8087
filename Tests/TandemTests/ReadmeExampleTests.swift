import Tandem
import Testing

private struct Page: Codable, Sendable { var title: String }

/// The README's example, as written there (keep the two in step): it must compile and do what it says.
@Test func readmeExampleRuns() async throws {
    let caches = try Caches(settings: [
        "default": CacheSettings(backend: "locmem", location: ["readme-example"], timeout: .seconds(300), keyPrefix: "shop"),
        "sessions": CacheSettings(backend: "dummy"),
    ])
    let cache = caches.default

    try cache.set("greeting", "hello", timeout: .seconds(60))
    let greeting: String? = try cache.get("greeting")
    try cache.add("hits", 0)
    let hits = try cache.incr("hits")

    let page = try await cache.async.getOrSet("page:1", timeout: .never) { Page(title: "Home") }
    let many: [String: Int] = try await cache.async.getMany(["a", "b"])

    #expect(greeting == "hello")
    #expect(hits == 1)
    #expect(page.title == "Home")
    #expect(many.isEmpty)
    #expect(cache.makeKey("greeting") == "shop:1:greeting")
    #expect(try caches["sessions"].get("greeting") as String? == nil)
}
