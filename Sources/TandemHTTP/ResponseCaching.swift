import Foundation
import HTTPTypes
import Logging
import Synchronization
import TandemCache
import TandemLoop

/// Stores upstream GET responses in a Tandem cache and answers from it as a shared cache does
/// (RFC 9111, with RFC 5861's stale-while-revalidate and stale-if-error):
///
/// The cache is shared: whatever one caller stores, every client on the same `cache` may be served.
/// So every decision is taken on the headers the request actually sends (the client's
/// ``UpstreamClientConfiguration/defaultHeaders`` and User-Agent included), on every line of a list
/// field (a second `Cache-Control` or `Vary` line counts as much as the first), and where RFC 9111
/// leaves a choice, on the side that can never serve one caller's response to another:
///
/// - Stored: responses to GET requests without `Authorization` (unless the response says `public` or
///   `s-maxage`), with a status RFC 9111 lets a cache store by default (not `206 Partial Content`),
///   a body of at most ``maxBodyBytes``, no `Set-Cookie`, and no `no-store` or `private` in
///   `Cache-Control` (and no `no-store` in the request's).
/// - Not looked up and not stored: requests with `Range` or `If-Range` (a partial answer belongs to
///   the range asked for).
/// - Found by the request's URL: the entry keeps the URL it was stored for and a lookup compares it
///   (the key is a digest of the URL, so two URLs may share a key; the second is then a miss).
/// - Invalidated (RFC 9111 §4.4): a `2xx` or `3xx` answer to a PUT, POST, PATCH or DELETE (any method
///   but GET, HEAD, OPTIONS and TRACE) drops what is stored for its URL, and for its `Location` and
///   `Content-Location` when they have the request's origin.
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

    /// Statuses a cache may store without explicit freshness (RFC 9110 §15.1), less `206`: a partial
    /// answer must never be served to a request for the whole (or for another range).
    static let storableStatuses: Set<Int> = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]

    /// Methods whose successful answer invalidates what is stored for the URL (RFC 9111 §4.4): all
    /// but the safe ones.
    static func invalidates(_ method: HTTPRequest.Method) -> Bool {
        method != .get && method != .head && method != .options && method != .trace
    }

    /// The cache key of a URL (hashed: URLs can be longer than memcached's keys).
    static func key(_ url: String) -> String { "tandem-http:" + keyDigest(url) }
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

/// A response as stored, with what a lookup needs parsed once, when it is stored: a cache hit parses
/// no header and no date. Stored as bytes in a compact binary form (see ``encoded``).
struct StoredResponse: Sendable {
    var status: Int
    var rawHeaders: [UInt8]
    var body: [UInt8]
    /// The URL that answered (after redirects).
    var url: String
    /// The URL the entry was stored for: a lookup whose request URL differs is a miss.
    var requestURL: String
    /// When the request was sent and the response received (seconds since 1970).
    var requestTime: Double
    var responseTime: Double
    /// The request's values of the headers the response's `Vary` names (lower-case names; "" absent).
    var vary: [(String, String)]
    // Parsed from the headers by `derive()`.
    var dateValue = 0.0
    var ageValue = 0.0
    var freshnessLifetime = 0.0
    var staleWhileRevalidate: Double?
    var staleIfError: Double?
    var noCache = false
    var mustRevalidate = false
    var etag: String?
    var lastModified: String?

    init(status: Int, rawHeaders: [UInt8], body: [UInt8], url: String, requestURL: String, requestTime: Double,
         responseTime: Double, vary: [(String, String)]) {
        self.status = status
        self.rawHeaders = rawHeaders
        self.body = body
        self.url = url
        self.requestURL = requestURL
        self.requestTime = requestTime
        self.responseTime = responseTime
        self.vary = vary
        derive()
    }

    var response: UpstreamResponse {
        UpstreamResponse(status: HTTPResponse.Status(code: status), rawHeaders: rawHeaders, body: body,
                     timings: .init(connect: .zero, firstByte: .zero, total: .zero), url: url)
    }

    /// Parses the headers once: RFC 9111 §4.2.1's freshness lifetime (for a shared cache), the `Date`
    /// and `Age` values, the directives and the validators.
    mutating func derive() {
        let r = response
        let cc = CacheControl(r.combinedHeader("Cache-Control"))
        dateValue = r.header("Date").flatMap(HTTPDate.parse) ?? responseTime
        ageValue = r.header("Age").flatMap { Double($0) } ?? 0
        if let s = cc.sMaxAge {
            freshnessLifetime = s
        } else if let m = cc.maxAge {
            freshnessLifetime = m
        } else if let expires = r.header("Expires") {
            // An Expires that is not a date means already expired.
            freshnessLifetime = HTTPDate.parse(expires).map { max(0, $0 - dateValue) } ?? 0
        } else {
            freshnessLifetime = 0
        }
        staleWhileRevalidate = cc.staleWhileRevalidate
        staleIfError = cc.staleIfError
        noCache = cc.noCache
        mustRevalidate = cc.mustRevalidate
        etag = r.header("ETag")
        lastModified = r.header("Last-Modified")
    }

    /// RFC 9111 §4.2.3.
    func currentAge(now: Double) -> Double {
        let apparent = max(0, responseTime - dateValue)
        let corrected = ageValue + (responseTime - requestTime)
        return max(apparent, corrected) + (now - responseTime)
    }

    var hasValidator: Bool { etag != nil || lastModified != nil }

    /// The stored response served with its current age (an `Age` line replaces any stored one).
    func served(now: Double) -> UpstreamResponse {
        var r = response
        var headers = rawHeaders
        while let last = headers.last, last == 0x0d || last == 0x0a { headers.removeLast() }
        var out: [UInt8] = []
        out.reserveCapacity(headers.count + 16)
        var start = headers.startIndex
        while start < headers.endIndex {
            let end = headers[start...].firstIndex(of: 0x0a).map { $0 + 1 } ?? headers.endIndex
            let line = headers[start..<end]
            let isAge = line.count >= 4 && line.prefix(4).map { $0 | 0x20 } == Array("age:".utf8)
            if !isAge { out += line }
            start = end
        }
        if let last = out.last, last != 0x0a { out += [0x0d, 0x0a] }
        out += Array("Age: \(Int(currentAge(now: now).rounded(.down)))\r\n\r\n".utf8)
        r.rawHeaders = out
        return r
    }

    /// A `304`'s headers replace the stored ones of the same name (RFC 9111 §3.2).
    mutating func refresh(with notModified: UpstreamResponse, requestTime: Double, responseTime: Double) {
        let updates = notModified.headers.filter { $0.name != .contentLength }
        let names = Set(updates.map { $0.name.canonicalName })
        var lines = String(decoding: rawHeaders, as: UTF8.self).components(separatedBy: "\r\n").filter { !$0.isEmpty }
        lines.removeAll { line in
            guard let colon = line.firstIndex(of: ":") else { return false }
            return names.contains(line[..<colon].lowercased())
        }
        lines += updates.map { "\($0.name.rawName): \($0.value)" }
        rawHeaders = Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8)
        self.requestTime = requestTime
        self.responseTime = responseTime
        derive()
    }

    // MARK: stored form

    private static let magic: [UInt8] = Array("TRC2".utf8)

    /// `TRC2`, then status, the times and the parsed values as fixed-width fields, then length-prefixed
    /// strings and byte runs: no JSON to parse on a hit.
    var encoded: [UInt8] {
        var w = ByteWriter()
        w.bytes(StoredResponse.magic, prefixed: false)
        w.u64(UInt64(max(0, status)))
        for d in [requestTime, responseTime, dateValue, ageValue, freshnessLifetime, staleWhileRevalidate ?? -1, staleIfError ?? -1] {
            w.u64(d.bitPattern)
        }
        w.u64((noCache ? 1 : 0) | (mustRevalidate ? 2 : 0) | (etag != nil ? 4 : 0) | (lastModified != nil ? 8 : 0))
        w.string(url)
        w.string(requestURL)
        w.string(etag ?? "")
        w.string(lastModified ?? "")
        w.u64(UInt64(vary.count))
        for (n, v) in vary { w.string(n); w.string(v) }
        w.bytes(rawHeaders)
        w.bytes(body)
        return w.out
    }

    /// Reads the stored form; nil for anything else (another writer's value is then a miss).
    init?(encoded: [UInt8]) {
        var r = ByteReader(encoded)
        guard r.take(4) == StoredResponse.magic[...], let status = r.u64() else { return nil }
        var d: [Double] = []
        for _ in 0..<7 {
            guard let x = r.u64() else { return nil }
            d.append(Double(bitPattern: x))
        }
        guard let flags = r.u64(), let url = r.string(), let requestURL = r.string(), let etag = r.string(), let lm = r.string(), let n = r.u64(), n < 1024
        else { return nil }
        var vary: [(String, String)] = []
        for _ in 0..<n {
            guard let k = r.string(), let v = r.string() else { return nil }
            vary.append((k, v))
        }
        guard let headers = r.bytes(), let body = r.bytes(), r.atEnd else { return nil }
        self.status = Int(status)
        self.rawHeaders = headers
        self.body = body
        self.url = url
        self.requestURL = requestURL
        self.requestTime = d[0]
        self.responseTime = d[1]
        self.vary = vary
        self.dateValue = d[2]
        self.ageValue = d[3]
        self.freshnessLifetime = d[4]
        self.staleWhileRevalidate = d[5] < 0 ? nil : d[5]
        self.staleIfError = d[6] < 0 ? nil : d[6]
        self.noCache = flags & 1 != 0
        self.mustRevalidate = flags & 2 != 0
        self.etag = flags & 4 != 0 ? etag : nil
        self.lastModified = flags & 8 != 0 ? lm : nil
    }
}

/// Appends fixed-width integers and length-prefixed byte runs.
struct ByteWriter {
    var out: [UInt8] = []
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
    mutating func bytes(_ b: [UInt8], prefixed: Bool = true) {
        if prefixed { u64(UInt64(b.count)) }
        out += b
    }
    mutating func string(_ s: String) { bytes(Array(s.utf8)) }
}

/// Reads what ``ByteWriter`` wrote; every read is bounds-checked.
struct ByteReader {
    private let data: [UInt8]
    private var at = 0
    init(_ data: [UInt8]) { self.data = data }
    var atEnd: Bool { at == data.count }
    mutating func take(_ n: Int) -> ArraySlice<UInt8>? {
        guard n >= 0, data.count - at >= n else { return nil }
        defer { at += n }
        return data[at..<(at + n)]
    }
    mutating func u64() -> UInt64? {
        guard let s = take(8) else { return nil }
        return s.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
    mutating func bytes() -> [UInt8]? {
        guard let n = u64(), n <= UInt64(Int.max), let s = take(Int(n)) else { return nil }
        return Array(s)
    }
    mutating func string() -> String? { bytes().flatMap { String(validating: $0, as: UTF8.self) } }
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

extension AsyncUpstreamClient {
    /// Sends a GET through the response cache; `fetch` does the network part.
    func sendCaching(_ request: UpstreamRequest, _ rc: ResponseCaching,
                     fetch: @escaping @Sendable (UpstreamRequest) async throws -> UpstreamResponse) async throws -> UpstreamResponse {
        try request.validate()
        let sent = client.sentHeaders(request)
        // A range request is neither served from the cache nor stored: its answer is a part.
        if sent.contains(.range) || sent.contains(.ifRange) { return try await fetch(request) }
        let requestCC = CacheControl(sent[values: .cacheControl].joined(separator: ", "))
        let key = ResponseCaching.key(request.url)
        let now = Date().timeIntervalSince1970
        // A cache that fails is a miss: the upstream still answers.
        var entry: StoredResponse? = requestCC.noStore ? nil : ((try? await rc.cache.async.get(key) as [UInt8]?) ?? nil)
            .flatMap { StoredResponse(encoded: $0) }
        if let e = entry, e.requestURL != request.url || !varyMatches(e, sent) { entry = nil }
        guard let stored = entry else { return try await fetchAndStore(request, rc, key, requestCC, fetch: fetch) }

        let age = stored.currentAge(now: now)
        let lifetime = stored.freshnessLifetime
        let mustCheck = stored.noCache || requestCC.noCache
        if !mustCheck && age < lifetime { return stored.served(now: now) }

        let staleBy = age - lifetime
        if !mustCheck, !stored.mustRevalidate, let swr = stored.staleWhileRevalidate, staleBy <= swr {
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
            if !fromCache && response.status.code >= 500, let served = staleIfError(stored, staleBy) { return served }
            return response
        } catch let e as UpstreamError {
            if let served = staleIfError(stored, staleBy) { return served }
            throw e
        }
    }

    private func staleIfError(_ stored: StoredResponse, _ staleBy: Double) -> UpstreamResponse? {
        guard !stored.mustRevalidate, let sie = stored.staleIfError, staleBy <= sie else { return nil }
        return stored.served(now: Date().timeIntervalSince1970)
    }

    /// Whether the headers a request sends have the values the stored response's `Vary` recorded.
    private func varyMatches(_ stored: StoredResponse, _ sent: HTTPFields) -> Bool {
        stored.vary.allSatisfy { name, value in varyValue(name, sent) == value }
    }

    /// A request's value of a header named by `Vary`: every line of it, joined (absent: "").
    private func varyValue(_ name: String, _ sent: HTTPFields) -> String {
        HTTPField.Name(name).map { sent[values: $0].joined(separator: ", ") } ?? ""
    }

    /// A conditional request for a stored response. Returns the response to serve, and whether it
    /// came from the cache (a 304).
    private func revalidate(_ request: UpstreamRequest, _ rc: ResponseCaching, _ key: String, _ stored: StoredResponse,
                            _ requestCC: CacheControl,
                            fetch: @escaping @Sendable (UpstreamRequest) async throws -> UpstreamResponse) async throws -> (UpstreamResponse, Bool) {
        guard stored.hasValidator else { return (try await fetchAndStore(request, rc, key, requestCC, fetch: fetch), false) }
        var conditional = request
        if let etag = stored.etag { conditional.headers[.ifNoneMatch] = etag }
        if let lm = stored.lastModified { conditional.headers[.ifModifiedSince] = lm }
        let sent = Date().timeIntervalSince1970
        let response = try await fetch(conditional)
        let received = Date().timeIntervalSince1970
        guard response.status.code == 304 else {
            return (try await store(response, request, rc, key, requestCC, sent: sent, received: received), false)
        }
        var refreshed = stored
        refreshed.refresh(with: response, requestTime: sent, responseTime: received)
        // The 304's headers join the stored ones: if they make the answer one a shared cache must not
        // keep (private, no-store, a cookie), it is served to this caller and dropped from the cache.
        let cc = CacheControl(response.combinedHeader("Cache-Control"))
        if cc.noStore || cc.isPrivate || response.header("Set-Cookie") != nil {
            _ = try? await rc.cache.async.delete(key)
        } else {
            try? await put(refreshed, rc, key)
        }
        return (refreshed.served(now: received), true)
    }

    private func fetchAndStore(_ request: UpstreamRequest, _ rc: ResponseCaching, _ key: String, _ requestCC: CacheControl,
                               fetch: @escaping @Sendable (UpstreamRequest) async throws -> UpstreamResponse) async throws -> UpstreamResponse {
        let sent = Date().timeIntervalSince1970
        let response = try await fetch(request)
        return try await store(response, request, rc, key, requestCC, sent: sent, received: Date().timeIntervalSince1970)
    }

    /// Stores `response` if a shared cache may; returns it either way.
    private func store(_ response: UpstreamResponse, _ request: UpstreamRequest, _ rc: ResponseCaching, _ key: String,
                       _ requestCC: CacheControl, sent: Double, received: Double) async throws -> UpstreamResponse {
        let cc = CacheControl(response.combinedHeader("Cache-Control"))
        let headersSent = client.sentHeaders(request)
        let authorized = headersSent.contains(.authorization)
        guard !requestCC.noStore, !cc.noStore, !cc.isPrivate, ResponseCaching.storableStatuses.contains(response.status.code),
              response.body.count <= rc.maxBodyBytes, !authorized || cc.isPublic || cc.sMaxAge != nil,
              response.header("Set-Cookie") == nil
        else { return response }
        var vary: [(String, String)] = []
        for name in (response.combinedHeader("Vary") ?? "").split(separator: ",") {
            let n = name.trimmingCharacters(in: .whitespaces).lowercased()
            if n == "*" || HTTPField.Name(n) == nil && !n.isEmpty { return response }  // never reusable
            if !n.isEmpty { vary.append((n, varyValue(n, headersSent))) }
        }
        let entry = StoredResponse(status: response.status.code, rawHeaders: response.rawHeaders, body: response.body,
                                   url: response.url, requestURL: request.url, requestTime: sent, responseTime: received,
                                   vary: vary)
        // Worth keeping only if it can be served: fresh for a while, revalidated, or served stale.
        guard entry.freshnessLifetime > 0 || entry.hasValidator || (entry.staleWhileRevalidate ?? 0) > 0 || (entry.staleIfError ?? 0) > 0
        else { return response }
        try? await put(entry, rc, key)
        return response
    }

    /// Keeps an entry for its freshness plus its stale windows (at least a minute, an hour when only
    /// a validator makes it reusable).
    private func put(_ entry: StoredResponse, _ rc: ResponseCaching, _ key: String) async throws {
        let keep = entry.freshnessLifetime + max(entry.staleWhileRevalidate ?? 0, entry.staleIfError ?? 0)
        try await rc.cache.async.set(key, entry.encoded, timeout: .seconds(max(entry.hasValidator ? 3600 : 60, keep)))
    }
}

extension UpstreamClient {
    /// The header fields `request` goes out with: the client's defaults, the request's own (which
    /// win), and the User-Agent libcurl adds when neither names one. What the shared response cache
    /// decides on (`Authorization`, `Vary`, `Range`, the request's `Cache-Control`).
    func sentHeaders(_ request: UpstreamRequest) -> HTTPFields {
        var sent = UpstreamRequest.merge(configuration.defaultHeaders, request.headers)
        if !sent.contains(.userAgent) { sent[.userAgent] = configuration.userAgent }
        return sent
    }
}

extension AsyncUpstreamClient {
    /// After a `2xx` or `3xx` answer to a method that changes the resource, drops what the response
    /// cache holds for the request's URL and for the answer's `Location` and `Content-Location` when
    /// they name the same origin (RFC 9111 §4.4). A failed delete is logged: the stored answer then
    /// stays until it expires.
    func invalidateStored(after response: UpstreamResponse, to request: UpstreamRequest, _ rc: ResponseCaching) async {
        guard (200..<400).contains(response.status.code) else { return }
        var urls = [request.url]
        if let target = URL(string: request.url), let origin = Origin(target) {
            for name in ["Location", "Content-Location"] {
                guard let value = response.header(name), let u = URL(string: value, relativeTo: target)?.absoluteURL,
                      Origin(u) == origin else { continue }
                urls.append(u.absoluteString)
            }
        }
        for url in Set(urls) {
            do {
                _ = try await rc.cache.async.delete(ResponseCaching.key(url))
            } catch {
                ResponseCaching.logger.warning("response cache: could not drop the stored answer after a change; it is served until it expires",
                                               metadata: ["method": "\(request.method)", "url": "\(url)", "error": "\(error)"])
            }
        }
    }
}

/// A URL's scheme, host and port (the default port when none is written), compared case-insensitively.
private struct Origin: Equatable {
    var scheme: String
    var host: String
    var port: Int
    init?(_ url: URL) {
        guard let scheme = url.scheme?.lowercased(), let host = url.host?.lowercased() else { return nil }
        self.scheme = scheme
        self.host = host
        self.port = url.port ?? (scheme == "https" ? 443 : 80)
    }
}

extension ResponseCaching {
    static let logger = Logger(label: "tandem.http.cache")
}
