import Foundation
import Synchronization
import TandemCache
import TandemLoop

/// Stores upstream GET responses in a Tandem cache and answers from it as a shared cache does
/// (RFC 9111, with RFC 5861's stale-while-revalidate and stale-if-error):
///
/// - Stored: responses to GET requests without `Authorization` (unless the response says `public` or
///   `s-maxage`), with a status RFC 9111 lets a cache store by default, a body of at most
///   ``maxBodyBytes``, and no `no-store` or `private` in `Cache-Control` (and no `no-store` in the request's).
/// - Fresh for `s-maxage`, else `max-age`, else `Expires` minus `Date`; its age counts the `Age` header
///   and the time it has been stored. A fresh response is served with an `Age` header and no request.
/// - Stale (or `no-cache`): revalidated with `If-None-Match` / `If-Modified-Since` when it has an
///   `ETag` or `Last-Modified`; a `304` refreshes the stored response and serves its body.
/// - Within `stale-while-revalidate`, a stale response is served at once and refreshed once in the
///   background; within `stale-if-error`, it is served when the upstream fails (an error or a 5xx).
///   `must-revalidate` (and `proxy-revalidate`) turn both off.
/// - `Vary`: the values of the named request headers are stored with the response; a request whose
///   values differ is a miss (one variant per URL is kept).
public struct ResponseCaching: Sendable {
    /// Where responses are stored (any backend).
    public var cache: Cache
    /// Responses with larger bodies are not stored.
    public var maxBodyBytes: Int

    /// Caching in `cache`, for bodies up to `maxBodyBytes` (1 MiB by default).
    public init(cache: Cache, maxBodyBytes: Int = 1 << 20) {
        self.cache = cache
        self.maxBodyBytes = maxBodyBytes
    }

    /// Statuses a cache may store without explicit freshness (RFC 9110 §15.1).
    static let storableStatuses: Set<Int> = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501]

    /// The cache key of a URL (hashed: URLs can be longer than memcached's keys).
    static func key(_ url: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in url.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return "tandem-http:" + String(h, radix: 16) + ":" + String(url.utf8.count)
    }
}

/// The `Cache-Control` directives a shared cache acts on.
struct CacheControl {
    var noStore = false
    var noCache = false
    var isPrivate = false
    var isPublic = false
    var mustRevalidate = false
    var maxAge: Double?
    var sMaxAge: Double?
    var staleWhileRevalidate: Double?
    var staleIfError: Double?

    init(_ header: String?) {
        guard let header else { return }
        for part in header.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1)
            let name = kv[0].trimmingCharacters(in: .whitespaces).lowercased()
            let value = kv.count > 1 ? Double(kv[1].trimmingCharacters(in: CharacterSet(charactersIn: " \t\""))) : nil
            switch name {
            case "no-store": noStore = true
            case "no-cache": noCache = true
            case "private": isPrivate = true
            case "public": isPublic = true
            case "must-revalidate", "proxy-revalidate": mustRevalidate = true
            case "max-age": maxAge = value.map { max(0, $0) }
            case "s-maxage": sMaxAge = value.map { max(0, $0) }
            case "stale-while-revalidate": staleWhileRevalidate = value.map { max(0, $0) }
            case "stale-if-error": staleIfError = value.map { max(0, $0) }
            default: continue
            }
        }
    }
}

/// A response as stored.
struct StoredResponse: Codable, Sendable {
    var status: Int
    var rawHeaders: [UInt8]
    var body: [UInt8]
    var url: String
    /// When the request was sent and the response received (seconds since 1970).
    var requestTime: Double
    var responseTime: Double
    /// The request's values of the headers the response's `Vary` names (lower-case names; "" absent).
    var vary: [String: String]

    var response: HTTPResponse {
        HTTPResponse(status: status, rawHeaders: rawHeaders, body: body,
                     timings: .init(connect: .zero, firstByte: .zero, total: .zero), url: url)
    }

    var control: CacheControl { CacheControl(response.header("Cache-Control")) }

    /// RFC 9111 §4.2.1, for a shared cache.
    var freshnessLifetime: Double {
        let cc = control
        if let s = cc.sMaxAge { return s }
        if let m = cc.maxAge { return m }
        if let expires = response.header("Expires") {
            guard let e = HTTPDate.parse(expires) else { return 0 }  // an invalid Expires means already expired
            let date = response.header("Date").flatMap(HTTPDate.parse) ?? responseTime
            return max(0, e - date)
        }
        return 0
    }

    /// RFC 9111 §4.2.3.
    func currentAge(now: Double) -> Double {
        let date = response.header("Date").flatMap(HTTPDate.parse) ?? responseTime
        let apparent = max(0, responseTime - date)
        let ageValue = response.header("Age").flatMap { Double($0) } ?? 0
        let corrected = ageValue + (responseTime - requestTime)
        return max(apparent, corrected) + (now - responseTime)
    }

    var hasValidator: Bool { response.header("ETag") != nil || response.header("Last-Modified") != nil }

    /// The stored response served with its current age.
    func served(now: Double) -> HTTPResponse {
        var r = response
        var lines = String(decoding: rawHeaders, as: UTF8.self).components(separatedBy: "\r\n").filter { !$0.isEmpty }
        lines.removeAll { $0.lowercased().hasPrefix("age:") }
        lines.append("Age: \(Int(currentAge(now: now).rounded(.down)))")
        r.rawHeaders = Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8)
        return r
    }

    /// A `304`'s headers replace the stored ones of the same name (RFC 9111 §3.2).
    mutating func refresh(with notModified: HTTPResponse, requestTime: Double, responseTime: Double) {
        let updates = notModified.headers.filter { $0.name.lowercased() != "content-length" }
        let names = Set(updates.map { $0.name.lowercased() })
        var lines = String(decoding: rawHeaders, as: UTF8.self).components(separatedBy: "\r\n").filter { !$0.isEmpty }
        lines.removeAll { line in
            guard let colon = line.firstIndex(of: ":") else { return false }
            return names.contains(line[..<colon].lowercased())
        }
        lines += updates.map { "\($0.name): \($0.value)" }
        rawHeaders = Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8)
        self.requestTime = requestTime
        self.responseTime = responseTime
    }
}

/// HTTP-dates (IMF-fixdate, RFC 9110 §5.6.7).
enum HTTPDate {
    private static let formatter: DateFormatter = {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return f
    }()
    private static let lock = Mutex(())

    /// Seconds since 1970, or nil for text that is not an HTTP-date.
    static func parse(_ text: String) -> Double? {
        lock.locked { _ in formatter.date(from: text)?.timeIntervalSince1970 }
    }

    static func format(_ seconds: Double) -> String {
        lock.locked { _ in formatter.string(from: Date(timeIntervalSince1970: seconds)) }
    }
}

/// Keys being refreshed in the background (stale-while-revalidate), so each is refreshed once.
final class BackgroundRefreshes: Sendable {
    private let keys = Mutex<Set<String>>([])
    func begin(_ key: String) -> Bool { keys.locked { $0.insert(key).inserted } }
    func end(_ key: String) { _ = keys.locked { $0.remove(key) } }
}

extension AsyncHTTPClient {
    /// Sends a GET through the response cache; `fetch` does the network part.
    func sendCaching(_ request: HTTPRequest, _ rc: ResponseCaching,
                     fetch: @escaping @Sendable (HTTPRequest) async throws -> HTTPResponse) async throws -> HTTPResponse {
        try request.validate()
        let requestCC = CacheControl(request.headers.first { $0.name.lowercased() == "cache-control" }?.value)
        let key = ResponseCaching.key(request.url)
        let now = Date().timeIntervalSince1970
        // A cache that fails is a miss: the upstream still answers.
        var entry: StoredResponse? = requestCC.noStore ? nil : ((try? await rc.cache.async.get(key)) ?? nil)
        if let e = entry, !varyMatches(e, request) { entry = nil }
        guard let stored = entry else { return try await fetchAndStore(request, rc, key, requestCC, fetch: fetch) }

        let cc = stored.control
        let age = stored.currentAge(now: now)
        let lifetime = stored.freshnessLifetime
        let mustCheck = cc.noCache || requestCC.noCache
        if !mustCheck && age < lifetime { return stored.served(now: now) }

        let staleBy = age - lifetime
        if !mustCheck, !cc.mustRevalidate, let swr = cc.staleWhileRevalidate, staleBy <= swr {
            if client.backgroundRefreshes.begin(key) {
                let refreshes = client.backgroundRefreshes
                Task {
                    _ = try? await self.revalidate(request, rc, key, stored, requestCC, fetch: fetch)
                    refreshes.end(key)
                }
            }
            return stored.served(now: now)
        }

        do {
            let (response, fromCache) = try await revalidate(request, rc, key, stored, requestCC, fetch: fetch)
            if !fromCache && response.status >= 500, let served = staleIfError(stored, cc, staleBy) { return served }
            return response
        } catch let e as HTTPError {
            if let served = staleIfError(stored, cc, staleBy) { return served }
            throw e
        }
    }

    private func staleIfError(_ stored: StoredResponse, _ cc: CacheControl, _ staleBy: Double) -> HTTPResponse? {
        guard !cc.mustRevalidate, let sie = cc.staleIfError, staleBy <= sie else { return nil }
        return stored.served(now: Date().timeIntervalSince1970)
    }

    private func varyMatches(_ stored: StoredResponse, _ request: HTTPRequest) -> Bool {
        stored.vary.allSatisfy { name, value in
            (request.headers.first { $0.name.lowercased() == name }?.value ?? "") == value
        }
    }

    /// A conditional request for a stored response. Returns the response to serve, and whether it
    /// came from the cache (a 304).
    private func revalidate(_ request: HTTPRequest, _ rc: ResponseCaching, _ key: String, _ stored: StoredResponse,
                            _ requestCC: CacheControl,
                            fetch: @escaping @Sendable (HTTPRequest) async throws -> HTTPResponse) async throws -> (HTTPResponse, Bool) {
        guard stored.hasValidator else { return (try await fetchAndStore(request, rc, key, requestCC, fetch: fetch), false) }
        var conditional = request
        if let etag = stored.response.header("ETag") { conditional.headers.append(("If-None-Match", etag)) }
        if let lm = stored.response.header("Last-Modified") { conditional.headers.append(("If-Modified-Since", lm)) }
        let sent = Date().timeIntervalSince1970
        let response = try await fetch(conditional)
        let received = Date().timeIntervalSince1970
        guard response.status == 304 else {
            return (try await store(response, request, rc, key, requestCC, sent: sent, received: received), false)
        }
        var refreshed = stored
        refreshed.refresh(with: response, requestTime: sent, responseTime: received)
        try? await put(refreshed, rc, key)
        return (refreshed.served(now: received), true)
    }

    private func fetchAndStore(_ request: HTTPRequest, _ rc: ResponseCaching, _ key: String, _ requestCC: CacheControl,
                               fetch: @escaping @Sendable (HTTPRequest) async throws -> HTTPResponse) async throws -> HTTPResponse {
        let sent = Date().timeIntervalSince1970
        let response = try await fetch(request)
        return try await store(response, request, rc, key, requestCC, sent: sent, received: Date().timeIntervalSince1970)
    }

    /// Stores `response` if a shared cache may; returns it either way.
    private func store(_ response: HTTPResponse, _ request: HTTPRequest, _ rc: ResponseCaching, _ key: String,
                       _ requestCC: CacheControl, sent: Double, received: Double) async throws -> HTTPResponse {
        let cc = CacheControl(response.header("Cache-Control"))
        let authorized = request.headers.contains { $0.name.lowercased() == "authorization" }
        guard !requestCC.noStore, !cc.noStore, !cc.isPrivate, ResponseCaching.storableStatuses.contains(response.status),
              response.body.count <= rc.maxBodyBytes, !authorized || cc.isPublic || cc.sMaxAge != nil
        else { return response }
        var vary: [String: String] = [:]
        for name in (response.header("Vary") ?? "").split(separator: ",") {
            let n = name.trimmingCharacters(in: .whitespaces).lowercased()
            if n == "*" { return response }  // varies on everything: never reusable
            if !n.isEmpty { vary[n] = request.headers.first { $0.name.lowercased() == n }?.value ?? "" }
        }
        let entry = StoredResponse(status: response.status, rawHeaders: response.rawHeaders, body: response.body,
                                   url: response.url, requestTime: sent, responseTime: received, vary: vary)
        // Worth keeping only if it can be served: fresh for a while, revalidated, or served stale.
        guard entry.freshnessLifetime > 0 || entry.hasValidator || (cc.staleWhileRevalidate ?? 0) > 0 || (cc.staleIfError ?? 0) > 0
        else { return response }
        try? await put(entry, rc, key)
        return response
    }

    /// Keeps an entry for its freshness plus its stale windows (at least a minute, an hour when only
    /// a validator makes it reusable).
    private func put(_ entry: StoredResponse, _ rc: ResponseCaching, _ key: String) async throws {
        let cc = entry.control
        let keep = entry.freshnessLifetime + max(cc.staleWhileRevalidate ?? 0, cc.staleIfError ?? 0)
        try await rc.cache.async.set(key, entry, timeout: .seconds(max(entry.hasValidator ? 3600 : 60, keep)))
    }
}
