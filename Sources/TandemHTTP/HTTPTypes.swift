import Foundation
import Tracing

/// An HTTP method.
public struct HTTPMethod: RawRepresentable, Hashable, Sendable, ExpressibleByStringLiteral, CustomStringConvertible {
    /// The method's name as sent.
    public let rawValue: String
    /// Wraps a method name (upper case by convention).
    public init(rawValue: String) { self.rawValue = rawValue }
    /// A method from a literal (`"PURGE"`).
    public init(stringLiteral value: String) { self.rawValue = value }
    /// The method's name.
    public var description: String { rawValue }
    /// GET.
    public static let get: HTTPMethod = "GET"
    /// POST.
    public static let post: HTTPMethod = "POST"
    /// PUT.
    public static let put: HTTPMethod = "PUT"
    /// PATCH.
    public static let patch: HTTPMethod = "PATCH"
    /// DELETE.
    public static let delete: HTTPMethod = "DELETE"
    /// HEAD (no body is read).
    public static let head: HTTPMethod = "HEAD"
    /// OPTIONS.
    public static let options: HTTPMethod = "OPTIONS"
}

/// A request to an upstream service.
public struct HTTPRequest: Sendable {
    /// The method.
    public var method: HTTPMethod
    /// The absolute `http://` or `https://` URL.
    public var url: String
    /// Headers in order (names are case-insensitive).
    public var headers: [(name: String, value: String)]
    /// The body, if any.
    public var body: [UInt8]?
    /// Overrides the client's per-request timeout.
    public var timeout: Duration?

    /// Creates a request.
    public init(_ method: HTTPMethod = .get, _ url: String, headers: [(name: String, value: String)] = [],
                body: [UInt8]? = nil, timeout: Duration? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }

    /// A request with a UTF-8 text body.
    public init(_ method: HTTPMethod, _ url: String, headers: [(name: String, value: String)] = [], text: String, timeout: Duration? = nil) {
        self.init(method, url, headers: headers, body: Array(text.utf8), timeout: timeout)
    }

    /// Rejects what must never reach the network: an unparsable URL, a scheme other than http(s), a
    /// method or header with CR, LF or other control characters (header injection).
    public func validate() throws(HTTPError) {
        // A light check on the UTF-8 bytes (no Foundation URL parsing on the hot path); libcurl parses
        // the URL fully before it opens any connection and reports a malformed one as invalidURL too.
        try HTTPRequest.checkURL(url)
        if method.rawValue.isEmpty || method.rawValue.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f }) {
            throw .invalidRequest(reason: "invalid method '\(method.rawValue)'")
        }
        for (name, value) in headers {
            if name.isEmpty || name.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f || $0 == UInt8(ascii: ":") }) {
                throw .invalidRequest(reason: "invalid header name \(name.debugDescription)")
            }
            if value.utf8.contains(where: { $0 == 0x0d || $0 == 0x0a || $0 == 0 }) {
                throw .invalidRequest(reason: "header \(name) has CR, LF or NUL in its value")
            }
        }
    }
}

extension HTTPRequest {
    /// Refuses URLs with spaces or control characters, without `scheme://`, with a scheme other than
    /// http or https, or without a host. Works on the UTF-8 bytes: it runs for every request.
    static func checkURL(_ url: String) throws(HTTPError) {
        var u = url
        let problem: String? = u.withUTF8 { b -> String? in
            if b.contains(where: { $0 < 0x21 || $0 == 0x7f }) { return "contains spaces or control characters" }
            let colon = UInt8(ascii: ":"), slash = UInt8(ascii: "/")
            var sep = -1
            var i = 0
            while i + 2 < b.count {
                if b[i] == colon && b[i + 1] == slash && b[i + 2] == slash { sep = i; break }
                i += 1
            }
            guard sep > 0 else { return "not a valid absolute URL" }
            func lower(_ x: UInt8) -> UInt8 { x | 0x20 }  // ASCII letters to lower case
            let http = sep >= 4 && lower(b[0]) == UInt8(ascii: "h") && lower(b[1]) == UInt8(ascii: "t")
                && lower(b[2]) == UInt8(ascii: "t") && lower(b[3]) == UInt8(ascii: "p")
            guard http && (sep == 4 || (sep == 5 && lower(b[4]) == UInt8(ascii: "s"))) else {
                return "unsupported scheme '\(String(decoding: b[0..<sep], as: UTF8.self).lowercased())'; use http or https"
            }
            var start = sep + 3
            var end = start
            while end < b.count, b[end] != slash, b[end] != UInt8(ascii: "?"), b[end] != UInt8(ascii: "#") { end += 1 }
            if let at = b[start..<end].lastIndex(of: UInt8(ascii: "@")) { start = at + 1 }
            var hostEnd = end
            if start < end, b[start] != UInt8(ascii: "["), let c = b[start..<end].lastIndex(of: colon) { hostEnd = c }
            return start < hostEnd ? nil : "missing host"
        }
        if let problem { throw .invalidURL(url: url, reason: problem) }
    }
}

/// An upstream's answer.
public struct HTTPResponse: Sendable {
    /// The status code.
    public var status: Int
    /// The header lines as received (of the final response when redirects were followed).
    public var rawHeaders: [UInt8]
    /// Headers in order, parsed from ``rawHeaders`` (names keep their case; compare case-insensitively).
    public var headers: [(name: String, value: String)] {
        var out: [(name: String, value: String)] = []
        var start = rawHeaders.startIndex
        while start < rawHeaders.endIndex {
            let end = rawHeaders[start...].firstIndex(of: 0x0a) ?? rawHeaders.endIndex
            let line = rawHeaders[start..<end]
            if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
                func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0d || b == 0x0a }
                var vs = colon + 1
                var ve = end
                while vs < ve, isSpace(rawHeaders[vs]) { vs += 1 }
                while ve > vs, isSpace(rawHeaders[ve - 1]) { ve -= 1 }
                out.append((String(decoding: rawHeaders[start..<colon], as: UTF8.self), String(decoding: rawHeaders[vs..<ve], as: UTF8.self)))
            }
            start = end < rawHeaders.endIndex ? end + 1 : end
        }
        return out
    }
    /// The body bytes.
    public var body: [UInt8]
    /// Timings reported by libcurl.
    public var timings: Timings
    /// The URL that answered (after redirects).
    public var url: String

    /// How long the phases of the request took (libcurl's figures, each from the start).
    public struct Timings: Sendable {
        /// Until the host name was resolved (0 when a kept-alive connection was reused).
        public var nameLookup: Duration
        /// Until the connection was established (0 when a kept-alive one was reused).
        public var connect: Duration
        /// Until the TLS handshake was done (0 for plain HTTP or a reused connection).
        public var tlsHandshake: Duration
        /// Until the first response byte.
        public var firstByte: Duration
        /// Until the end.
        public var total: Duration

        /// Timings of a request.
        public init(nameLookup: Duration = .zero, connect: Duration, tlsHandshake: Duration = .zero,
                    firstByte: Duration, total: Duration) {
            self.nameLookup = nameLookup
            self.connect = connect
            self.tlsHandshake = tlsHandshake
            self.firstByte = firstByte
            self.total = total
        }
    }

    /// The first header named `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// Creates a response (the client does this).
    public init(status: Int, rawHeaders: [UInt8], body: [UInt8], timings: Timings, url: String) {
        self.status = status
        self.rawHeaders = rawHeaders
        self.body = body
        self.timings = timings
        self.url = url
    }

    /// The body as UTF-8 text, if it is valid UTF-8.
    public var text: String? { String(validating: body, as: UTF8.self) }
}

/// Typed HTTP failures. Each names the URL or the reason.
public enum HTTPError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The URL does not parse, or its scheme is not http or https (found before any I/O).
    case invalidURL(url: String, reason: String)
    /// A bad method or header (CR, LF or NUL in it, an empty name), found before any I/O.
    case invalidRequest(reason: String)
    /// No connection could be made (refused, unreachable, or the connect timeout passed).
    case connectFailed(url: String, reason: String)
    /// The host name did not resolve.
    case dnsFailed(url: String, reason: String)
    /// The request timeout passed before the response was complete.
    case timeout(url: String)
    /// The TLS handshake failed, or the peer's certificate did not verify.
    case tlsFailure(url: String, reason: String)
    /// More redirects than the configuration allows.
    case tooManyRedirects(url: String)
    /// The response body is larger than `maxBodyBytes`; it was not buffered whole.
    case bodyTooLarge(url: String, limit: Int)
    /// The request was cancelled (its task, or the fan-out around it).
    case cancelled(url: String)
    /// A fan-out's deadline passed while this request was still running.
    case deadlineExceeded(url: String)
    /// The upstream closed or reset the connection before the response was complete.
    case upstreamClosed(url: String, reason: String)
    /// The upstream answered with something that is not HTTP.
    case invalidResponse(url: String, reason: String)
    /// Any other transfer failure, with curl's code and message.
    case transferFailed(url: String, code: Int, reason: String)
    /// The client was shut down (or its loop was) before the request finished.
    case clientShutDown

    /// A human-readable explanation naming the URL and the cause.
    public var description: String {
        switch self {
        case .invalidURL(let url, let reason): return "invalid URL \(url.debugDescription): \(reason)"
        case .invalidRequest(let reason): return "invalid request: \(reason)"
        case .connectFailed(let url, let reason): return "could not connect for \(url): \(reason)"
        case .dnsFailed(let url, let reason): return "could not resolve the host of \(url): \(reason)"
        case .timeout(let url): return "request to \(url) timed out"
        case .tlsFailure(let url, let reason): return "TLS failure for \(url): \(reason)"
        case .tooManyRedirects(let url): return "too many redirects from \(url)"
        case .bodyTooLarge(let url, let limit): return "response body from \(url) is larger than \(limit) bytes"
        case .cancelled(let url): return "request to \(url) was cancelled"
        case .deadlineExceeded(let url): return "request to \(url) did not finish before the deadline"
        case .upstreamClosed(let url, let reason): return "upstream \(url) closed or broke the connection: \(reason)"
        case .invalidResponse(let url, let reason): return "upstream \(url) answered with something that is not valid HTTP: \(reason)"
        case .transferFailed(let url, let code, let reason): return "request to \(url) failed (curl \(code)): \(reason)"
        case .clientShutDown: return "the HTTP client's event loop has shut down"
        }
    }
}

/// How an ``HTTPClient`` behaves.
public struct HTTPClientConfiguration: Sendable {
    /// Time allowed to connect (TCP and TLS).
    public var connectTimeout: Duration = .seconds(5)
    /// Time allowed for a whole request (including waiting for a free connection).
    public var requestTimeout: Duration = .seconds(30)
    /// Most connections to one host (0: no limit); further requests wait.
    public var maxConnectionsPerHost: Int = 0
    /// Most connections in total (0: no limit).
    public var maxConnections: Int = 0
    /// Most idle keep-alive connections kept for reuse. libcurl's own default follows the number of
    /// transfers in flight at the moment, so a client whose load goes up and down would close and
    /// reopen connections; Tandem keeps a fixed number instead.
    public var maxIdleConnections: Int = 256
    /// Largest response body accepted; larger fails with ``HTTPError/bodyTooLarge(url:limit:)``.
    public var maxBodyBytes: Int = 16 * 1024 * 1024
    /// Follow redirects (off by default).
    public var followRedirects: Bool = false
    /// Most redirects followed when ``followRedirects`` is on.
    public var maxRedirects: Int = 5
    /// Verify TLS peers (on by default, with the system CA store).
    public var verifyTLS: Bool = true
    /// A PEM file of extra trusted CAs (for private CAs).
    public var caFile: String?
    /// Headers sent with every request (a request's own headers come after and win).
    public var defaultHeaders: [(name: String, value: String)] = []
    /// The retry policy of every request that does not bring its own (nil: no retries).
    public var retryPolicy: RetryPolicy?
    /// Caches GET responses in a Tandem cache as a shared HTTP cache does (nil: no caching).
    public var responseCaching: ResponseCaching?
    /// Where `HTTP <METHOD>` spans go (nil: the tracer bootstrapped with `InstrumentationSystem`, if any).
    public var tracer: (any Tracer)?
    /// The hedging policy of every request that brings no policy of its own (nil: no hedging; it
    /// takes precedence over ``retryPolicy``).
    public var hedgingPolicy: HedgingPolicy?
    /// The User-Agent header.
    public var userAgent: String = "tandem/\(HTTPClient.version)"

    /// The defaults.
    public init() {}
}

extension HTTPRequest {
    /// The header fields a request sends: `defaults` first, then the request's own; a field the request
    /// names replaces every default of that name (field names compare case-insensitively).
    static func merge(_ defaults: [(name: String, value: String)], _ own: [(name: String, value: String)]) -> [(name: String, value: String)] {
        if own.isEmpty { return defaults }
        if defaults.isEmpty { return own }
        let overridden = Set(own.map { $0.name.lowercased() })
        return defaults.filter { !overridden.contains($0.name.lowercased()) } + own
    }
}
