import HTTPTypes

/// How one request sets an easy handle's per-request options, decided without curl: which headers it
/// sends, how its method and body are given to curl, and whether a reused handle needs anything but
/// its per-transfer pointers (most requests of a client repeat the previous ones).
package struct CurlRequestPlan: Sendable {
    /// What a handle keeps from a plain request, so that the next plain one only sets what differs.
    package struct Setup: Equatable, Sendable {
        package var url: String
        package var timeoutMs: Int
        package var method: HTTPRequest.Method
    }

    /// How the method and body reach curl.
    package enum Method: Equatable, Sendable {
        /// HEAD: no body is read.
        case head
        /// GET, DELETE, OPTIONS, ... without a body: no Content-Length, no Content-Type
        /// (`custom`: the method's name, when not GET).
        case withoutBody(custom: String?)
        /// POST, PUT, PATCH, or any request with a body (`custom`: the method's name, when not POST).
        case withBody(custom: String?)
    }

    /// The handle setup this request leaves.
    package let setup: Setup
    /// A GET or HEAD with no body and no headers of its own: it leaves the handle as the next such
    /// request can reuse it.
    package let isPlain: Bool
    /// The method and body.
    package let method: Method
    /// The header lines to send; nil: the client's shared list (``sharedHeaderLines(_:)``).
    package let headerLines: [String]?

    /// The plan of `request` on a client with `defaultHeaders` and `defaultTimeout`.
    package init(_ request: UpstreamRequest, defaultHeaders: HTTPFields, defaultTimeout: Duration) {
        setup = Setup(url: request.url, timeoutMs: CurlRequestPlan.milliseconds(request.timeout ?? defaultTimeout), method: request.method)
        isPlain = request.headers.isEmpty && request.body == nil && (request.method == .get || request.method == .head)
        // Only a request with a body (or a method that defines one: POST, PUT, PATCH, which then say
        // Content-Length: 0) sends body headers, and never a content type it did not ask for.
        let sendsBody = request.body != nil || request.method == .post || request.method == .put || request.method == .patch
        if request.method == .head {
            method = .head
        } else if !sendsBody {
            method = .withoutBody(custom: request.method == .get ? nil : request.method.rawValue)
        } else {
            method = .withBody(custom: request.method == .post ? nil : request.method.rawValue)
        }
        if request.headers.isEmpty && !sendsBody {
            headerLines = nil
        } else {
            var lines = UpstreamRequest.merge(defaultHeaders, request.headers).map(CurlRequestPlan.headerLine)
            let hasContentType = defaultHeaders.contains(.contentType) || request.headers.contains(.contentType)
            if sendsBody && !hasContentType { lines.append("Content-Type:") }
            lines.append("Expect:")
            headerLines = lines
        }
    }

    /// True when a handle last set up with `previous` needs only this transfer's pointers.
    package func reuses(_ previous: Setup?) -> Bool { isPlain && previous == setup }

    /// What the handle remembers after this request: only a plain request leaves it reusable as is.
    package var remembered: Setup? { isPlain ? setup : nil }

    /// The header lines of a request that adds none of its own: the client's defaults, and no
    /// 100-continue round trip for bodies.
    package static func sharedHeaderLines(_ defaultHeaders: HTTPFields) -> [String] {
        defaultHeaders.map(headerLine) + ["Expect:"]
    }

    /// A field as curl takes it: `Name: value`, or `Name;` for an empty value (`Name:` would remove it).
    package static func headerLine(_ field: HTTPField) -> String {
        field.value.isEmpty ? "\(field.name.rawName);" : "\(field.name.rawName): \(field.value)"
    }

    /// A duration in whole milliseconds, at least 1 (curl reads 0 as "no timeout").
    package static func milliseconds(_ d: Duration) -> Int {
        let c = d.components
        return max(1, Int(c.seconds) * 1000 + Int(c.attoseconds / 1_000_000_000_000_000))
    }
}
