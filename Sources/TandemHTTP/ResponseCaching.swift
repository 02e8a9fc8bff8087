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

extension ResponseCaching {
    static let logger = Logger(label: "tandem.http.cache")
}
