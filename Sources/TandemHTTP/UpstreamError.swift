/// Typed HTTP failures. Each names the URL or the reason.
///
/// Tell errors apart by ``code``; new codes may come in any release, so a `switch` over codes needs a
/// `default`. The fields a code carries (``url``, ``reason``, ...) are set, the others nil.
public struct UpstreamError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What kind of failure an ``UpstreamError`` is, without its details.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Hashable, Sendable {
            case invalidURL, invalidRequest, connectFailed, dnsFailed, timeout, tlsFailure, tooManyRedirects, bodyTooLarge, cancelled, deadlineExceeded, upstreamClosed, invalidResponse, transferFailed, clientShutDown
        }
        fileprivate let base: Base

        /// The URL does not parse, or its scheme is not http or https (found before any I/O).
        public static var invalidURL: Code { Code(base: .invalidURL) }
        /// A bad method or header (CR, LF or NUL in it, an empty name), found before any I/O.
        public static var invalidRequest: Code { Code(base: .invalidRequest) }
        /// No connection could be made (refused, unreachable, or the connect timeout passed).
        public static var connectFailed: Code { Code(base: .connectFailed) }
        /// The host name did not resolve.
        public static var dnsFailed: Code { Code(base: .dnsFailed) }
        /// The request timeout passed before the response was complete.
        public static var timeout: Code { Code(base: .timeout) }
        /// The TLS handshake failed, or the peer's certificate did not verify.
        public static var tlsFailure: Code { Code(base: .tlsFailure) }
        /// More redirects than the configuration allows.
        public static var tooManyRedirects: Code { Code(base: .tooManyRedirects) }
        /// The response body is larger than `maxBodyBytes`; it was not buffered whole.
        public static var bodyTooLarge: Code { Code(base: .bodyTooLarge) }
        /// The request was cancelled (its task, or the fan-out around it).
        public static var cancelled: Code { Code(base: .cancelled) }
        /// A fan-out's deadline passed while this request was still running.
        public static var deadlineExceeded: Code { Code(base: .deadlineExceeded) }
        /// The upstream closed or reset the connection before the response was complete.
        public static var upstreamClosed: Code { Code(base: .upstreamClosed) }
        /// The upstream answered with something that is not HTTP.
        public static var invalidResponse: Code { Code(base: .invalidResponse) }
        /// Any other transfer failure, with curl's code and message.
        public static var transferFailed: Code { Code(base: .transferFailed) }
        /// The client was shut down (or its loop was) before the request finished.
        public static var clientShutDown: Code { Code(base: .clientShutDown) }
        /// The code's name (`timeout`, `connectFailed`, ...).
        public var description: String { base.rawValue }
    }

    /// The failure and its details, one case per code: what Tandem's modules build and read.
    package enum Detail: Equatable, Sendable {
        case invalidURL(url: String, reason: String)
        case invalidRequest(reason: String)
        case connectFailed(url: String, reason: String)
        case dnsFailed(url: String, reason: String)
        case timeout(url: String)
        case tlsFailure(url: String, reason: String)
        case tooManyRedirects(url: String)
        case bodyTooLarge(url: String, limit: Int)
        case cancelled(url: String)
        case deadlineExceeded(url: String)
        case upstreamClosed(url: String, reason: String)
        case invalidResponse(url: String, reason: String)
        case transferFailed(url: String, code: Int, reason: String)
        case clientShutDown
    }

    /// The failure and its details.
    package let detail: Detail

    /// An error of `detail`.
    package init(_ detail: Detail) { self.detail = detail }

    /// What kind of failure this is.
    public var code: Code {
        switch detail {
        case .invalidURL: .invalidURL
        case .invalidRequest: .invalidRequest
        case .connectFailed: .connectFailed
        case .dnsFailed: .dnsFailed
        case .timeout: .timeout
        case .tlsFailure: .tlsFailure
        case .tooManyRedirects: .tooManyRedirects
        case .bodyTooLarge: .bodyTooLarge
        case .cancelled: .cancelled
        case .deadlineExceeded: .deadlineExceeded
        case .upstreamClosed: .upstreamClosed
        case .invalidResponse: .invalidResponse
        case .transferFailed: .transferFailed
        case .clientShutDown: .clientShutDown
        }
    }

    /// The code's name (`timeout`, `connectFailed`, ...), as metrics report it in `error.type`: no URL,
    /// no reason text.
    public var kind: String { code.description }

    /// The URL does not parse, or its scheme is not http or https (found before any I/O).
    public static func invalidURL(url: String, reason: String) -> UpstreamError { UpstreamError(.invalidURL(url: url, reason: reason)) }
    /// A bad method or header (CR, LF or NUL in it, an empty name), found before any I/O.
    public static func invalidRequest(reason: String) -> UpstreamError { UpstreamError(.invalidRequest(reason: reason)) }
    /// No connection could be made (refused, unreachable, or the connect timeout passed).
    public static func connectFailed(url: String, reason: String) -> UpstreamError { UpstreamError(.connectFailed(url: url, reason: reason)) }
    /// The host name did not resolve.
    public static func dnsFailed(url: String, reason: String) -> UpstreamError { UpstreamError(.dnsFailed(url: url, reason: reason)) }
    /// The request timeout passed before the response was complete.
    public static func timeout(url: String) -> UpstreamError { UpstreamError(.timeout(url: url)) }
    /// The TLS handshake failed, or the peer's certificate did not verify.
    public static func tlsFailure(url: String, reason: String) -> UpstreamError { UpstreamError(.tlsFailure(url: url, reason: reason)) }
    /// More redirects than the configuration allows.
    public static func tooManyRedirects(url: String) -> UpstreamError { UpstreamError(.tooManyRedirects(url: url)) }
    /// The response body is larger than `maxBodyBytes`; it was not buffered whole.
    public static func bodyTooLarge(url: String, limit: Int) -> UpstreamError { UpstreamError(.bodyTooLarge(url: url, limit: limit)) }
    /// The request was cancelled (its task, or the fan-out around it).
    public static func cancelled(url: String) -> UpstreamError { UpstreamError(.cancelled(url: url)) }
    /// A fan-out's deadline passed while this request was still running.
    public static func deadlineExceeded(url: String) -> UpstreamError { UpstreamError(.deadlineExceeded(url: url)) }
    /// The upstream closed or reset the connection before the response was complete.
    public static func upstreamClosed(url: String, reason: String) -> UpstreamError { UpstreamError(.upstreamClosed(url: url, reason: reason)) }
    /// The upstream answered with something that is not HTTP.
    public static func invalidResponse(url: String, reason: String) -> UpstreamError { UpstreamError(.invalidResponse(url: url, reason: reason)) }
    /// Any other transfer failure, with curl's code and message.
    public static func transferFailed(url: String, code: Int, reason: String) -> UpstreamError { UpstreamError(.transferFailed(url: url, code: code, reason: reason)) }
    /// The client was shut down (or its loop was) before the request finished.
    public static var clientShutDown: UpstreamError { UpstreamError(.clientShutDown) }

    /// A human-readable explanation naming the URL and the cause.
    public var description: String {
        switch detail {
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

extension UpstreamError {
    /// The URL of the request that failed (every code but `invalidRequest` and `clientShutDown`).
    public var url: String? {
        switch detail {
        case .invalidURL(let v, _): v
        case .connectFailed(let v, _): v
        case .dnsFailed(let v, _): v
        case .timeout(let v): v
        case .tlsFailure(let v, _): v
        case .tooManyRedirects(let v): v
        case .bodyTooLarge(let v, _): v
        case .cancelled(let v): v
        case .deadlineExceeded(let v): v
        case .upstreamClosed(let v, _): v
        case .invalidResponse(let v, _): v
        case .transferFailed(let v, _, _): v
        default: nil
        }
    }
    /// Why, in words (`invalidURL`, `invalidRequest`, `connectFailed`, `dnsFailed`, `tlsFailure`,
    /// `upstreamClosed`, `invalidResponse`, `transferFailed`).
    public var reason: String? {
        switch detail {
        case .invalidURL(_, let v): v
        case .invalidRequest(let v): v
        case .connectFailed(_, let v): v
        case .dnsFailed(_, let v): v
        case .tlsFailure(_, let v): v
        case .upstreamClosed(_, let v): v
        case .invalidResponse(_, let v): v
        case .transferFailed(_, _, let v): v
        default: nil
        }
    }
    /// The body size limit a response passed, in bytes (`bodyTooLarge`).
    public var limit: Int? {
        switch detail {
        case .bodyTooLarge(_, let v): v
        default: nil
        }
    }
    /// curl's error code (`transferFailed`).
    public var curlCode: Int? {
        switch detail {
        case .transferFailed(_, let v, _): v
        default: nil
        }
    }
}
