import HTTPTypes

/// A request to an upstream service. Its head uses apple's swift-http-types (`HTTPRequest.Method`,
/// `HTTPFields`), the types Hummingbird and async-http-client's users already know.
public struct UpstreamRequest: Sendable {
    /// The method.
    public var method: HTTPRequest.Method
    /// The absolute `http://` or `https://` URL.
    public var url: String
    /// The header fields, in order. `HTTPField.Name` checks names; swift-http-types turns CR, LF and
    /// NUL in a value into spaces, so no field can inject another.
    public var headers: HTTPFields
    /// The body, if any.
    public var body: [UInt8]?
    /// Overrides the client's per-request timeout.
    public var timeout: Duration?

    /// Creates a request.
    public init(_ method: HTTPRequest.Method = .get, _ url: String, headers: HTTPFields = [:],
                body: [UInt8]? = nil, timeout: Duration? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }

    /// A request with a UTF-8 text body.
    public init(_ method: HTTPRequest.Method, _ url: String, headers: HTTPFields = [:], text: String, timeout: Duration? = nil) {
        self.init(method, url, headers: headers, body: Array(text.utf8), timeout: timeout)
    }

    /// Rejects what must never reach the network: an unparsable URL or a scheme other than http(s).
    /// (Methods and field names are checked when they are made: `HTTPRequest.Method("GE T")` and
    /// `HTTPField.Name("a:b")` are nil.)
    public func validate() throws(UpstreamError) {
        // A light check on the UTF-8 bytes (no Foundation URL parsing on the hot path); libcurl parses
        // the URL fully before it opens any connection and reports a malformed one as invalidURL too.
        try UpstreamRequest.checkURL(url)
    }
}

extension UpstreamRequest {
    /// Refuses URLs with spaces or control characters, without `scheme://`, with a scheme other than
    /// http or https, or without a host. Works on the UTF-8 bytes: it runs for every request.
    static func checkURL(_ url: String) throws(UpstreamError) {
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

extension UpstreamRequest {
    /// The header fields a request sends: `defaults` first, then the request's own; a field the request
    /// names replaces every default of that name (field names compare case-insensitively).
    static func merge(_ defaults: HTTPFields, _ own: HTTPFields) -> HTTPFields {
        if own.isEmpty { return defaults }
        if defaults.isEmpty { return own }
        var out = HTTPFields()
        for field in defaults where !own.contains(field.name) { out.append(field) }
        out.append(contentsOf: own)
        return out
    }
}
