import Foundation
import HTTPTypes
import Logging
import TandemCache

/// Whole responses of a server kept in a Tandem cache, by the rules of Django's `CacheMiddleware`
/// (`UpdateCacheMiddleware` + `FetchFromCacheMiddleware`). The Hummingbird and Vapor adapters' response
/// cache middlewares are thin layers over it; a middleware for another server framework can be one too.
///
/// - Only GET and HEAD requests are answered from the cache; a HEAD with no entry of its own is
///   answered from the GET's (without a body).
/// - Only `200` responses to GET or HEAD are stored, and not when the response says
///   `Cache-Control: private`, `no-store`, `no-cache` or `max-age=0`, sets a cookie, or answers a
///   request with `Authorization` without `public` or `s-maxage`.
/// - The timeout is the response's `max-age` (or `s-maxage`), else ``timeout``; a response stored with
///   the default timeout gets `Cache-Control: max-age=<timeout>`, as Django's `patch_response_headers` does.
/// - `Vary`: as in Django, the names a URL's response varies on are stored for the URL, and the page
///   is stored under the values the request had for them, so each variant is its own entry.
/// - A page served from the cache carries `Age` (seconds since it was stored): the caller sends
///   ``Page/age`` with it.
/// - The cache failing is a miss (logged at warning level): the handler still answers.
public struct PageCache: Sendable {
    /// The cache pages are kept in.
    public let cache: Cache
    /// Seconds a page is kept when the response names no `max-age` (Django's `CACHE_MIDDLEWARE_SECONDS`).
    public let timeout: Int
    /// Put in front of every key (Django's `CACHE_MIDDLEWARE_KEY_PREFIX`).
    public let keyPrefix: String
    let logger: Logger

    /// A page cache in `cache`: `timeout` rounded up to whole seconds (a page cache of 0.5 s keeps
    /// pages for 1 s, not for none), 0 or less stores only pages whose handler names a `max-age`;
    /// failures are logged with the label `label`.
    public init(cache: Cache, timeout: Duration, keyPrefix: String, label: String) {
        let c = timeout.components
        self.cache = cache
        self.timeout = Int(c.seconds) + (c.attoseconds > 0 ? 1 : 0)
        self.keyPrefix = keyPrefix
        self.logger = Logger(label: label)
    }

    /// A stored page.
    public struct Page: Sendable {
        /// The response's status code.
        public var status: Int
        /// The response's header fields, as stored (the caller adds `Age` from ``age``).
        public var headers: HTTPFields
        /// The response's body, as stored (the caller sends none for a HEAD).
        public var body: [UInt8]
        /// Seconds since the page was stored (for `Age`).
        public var age: Int
    }

    /// The page for this request, if one is stored and fresh.
    public func lookup(method: HTTPRequest.Method, authority: String, path: String, headers: HTTPFields) async -> Page? {
        guard method == .get || method == .head else { return nil }
        if let page = await lookup(as: method, authority: authority, path: path, headers: headers) { return page }
        return method == .head ? await lookup(as: .get, authority: authority, path: path, headers: headers) : nil
    }

    private func lookup(as method: HTTPRequest.Method, authority: String, path: String, headers: HTTPFields) async -> Page? {
        let url = authority + path
        do {
            guard let names: String = try await cache.async.get(headerListKey(url)) else { return nil }
            let identity = pageIdentity(method, url, varyNames(names), headers)
            guard let bytes: [UInt8] = try await cache.async.get(pageKey(identity)) else { return nil }
            return Self.decode(bytes, identity: identity, now: Date().timeIntervalSince1970)
        } catch {
            logger.warning("page cache lookup failed; the handler answers", metadata: ["url": "\(url)", "error": "\(error)"])
            return nil
        }
    }

    /// Stores the response if the rules allow. Returns the header fields to send with it (with
    /// `Cache-Control: max-age` added when the default timeout applies).
    public func store(method: HTTPRequest.Method, authority: String, path: String, requestHeaders: HTTPFields,
                       status: Int, headers: HTTPFields, body: [UInt8]) async -> HTTPFields {
        guard let seconds = Self.storableTimeout(method: method, requestHeaders: requestHeaders, status: status,
                                                 headers: headers, defaultTimeout: timeout) else { return headers }
        var sent = headers
        if CacheControl(headers[.cacheControl]).maxAge == nil && CacheControl(headers[.cacheControl]).sMaxAge == nil {
            sent[.cacheControl] = headers[.cacheControl].map { "\($0), max-age=\(seconds)" } ?? "max-age=\(seconds)"
        }
        let url = authority + path
        let names = (headers[.vary] ?? "").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty }
        if names.contains("*") { return sent }  // varies on everything: never reusable
        let identity = pageIdentity(method, url, names, requestHeaders)
        do {
            try await cache.async.set(headerListKey(url), names.joined(separator: ","), timeout: .seconds(Double(seconds)))
            try await cache.async.set(pageKey(identity), Self.encode(status: status, headers: sent, body: body, identity: identity,
                                                                    storedAt: Date().timeIntervalSince1970),
                                      timeout: .seconds(Double(seconds)))
        } catch {
            logger.warning("page cache store failed", metadata: ["url": "\(url)", "error": "\(error)"])
        }
        return sent
    }

    /// The seconds a response may be kept, or nil when it must not be stored.
    public static func storableTimeout(method: HTTPRequest.Method, requestHeaders: HTTPFields, status: Int,
                                       headers: HTTPFields, defaultTimeout: Int) -> Int? {
        guard method == .get || method == .head, status == 200, !headers.contains(.setCookie) else { return nil }
        let cc = CacheControl(headers[.cacheControl])
        guard !cc.isPrivate, !cc.noStore, !cc.noCache else { return nil }
        if requestHeaders.contains(.authorization) && !cc.isPublic && cc.sMaxAge == nil { return nil }
        let seconds = (cc.sMaxAge ?? cc.maxAge).map { Int($0) } ?? defaultTimeout
        return seconds > 0 ? seconds : nil
    }

    // MARK: keys and the stored form

    private func varyNames(_ stored: String) -> [String] {
        stored.split(separator: ",").map(String.init)
    }

    /// What the page is stored for: method, URL and the request's values of the Vary names. Kept in the
    /// entry and compared on every read, so a hash collision between keys can never serve another page.
    private func pageIdentity(_ method: HTTPRequest.Method, _ url: String, _ names: [String], _ headers: HTTPFields) -> String {
        var id = method.rawValue + " " + url
        for name in names {
            id += "\n" + name + ": " + (HTTPField.Name(name).flatMap { headers[$0] } ?? "")
        }
        return id
    }

    private func headerListKey(_ url: String) -> String { keyPrefix + "tandem-page-vary:" + keyDigest(url) }
    private func pageKey(_ identity: String) -> String { keyPrefix + "tandem-page:" + keyDigest(identity) }

    private static let magic: [UInt8] = Array("TPG1".utf8)

    static func encode(status: Int, headers: HTTPFields, body: [UInt8], identity: String, storedAt: Double) -> [UInt8] {
        var w = ByteWriter()
        w.bytes(magic, prefixed: false)
        w.string(identity)
        w.u64(UInt64(status))
        w.u64(storedAt.bitPattern)
        w.u64(UInt64(headers.count))
        for field in headers {
            w.string(field.name.rawName)
            w.string(field.value)
        }
        w.bytes(body)
        return w.out
    }

    static func decode(_ bytes: [UInt8], identity: String, now: Double) -> Page? {
        var r = ByteReader(bytes)
        guard r.take(4) == magic[...], r.string() == identity, let status = r.u64(), status < 1000,
              let storedAt = r.u64().map(Double.init(bitPattern:)), let count = r.u64(), count < 10_000 else { return nil }
        var headers = HTTPFields()
        for _ in 0..<count {
            guard let name = r.string(), let value = r.string(), let n = HTTPField.Name(name) else { return nil }
            headers.append(HTTPField(name: n, value: value))
        }
        guard let body = r.bytes(), r.atEnd else { return nil }
        return Page(status: Int(status), headers: headers, body: body, age: max(0, Int(now - storedAt)))
    }
}
