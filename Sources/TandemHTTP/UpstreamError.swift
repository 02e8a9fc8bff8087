/// Typed HTTP failures. Each names the URL or the reason.
public enum UpstreamError: Error, Equatable, Sendable, CustomStringConvertible {
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

    /// The case's name (`timeout`, `connectFailed`, ...), as metrics report it in `error.type`: no URL,
    /// no reason text.
    public var kind: String {
        switch self {
        case .invalidURL: "invalidURL"
        case .invalidRequest: "invalidRequest"
        case .connectFailed: "connectFailed"
        case .dnsFailed: "dnsFailed"
        case .timeout: "timeout"
        case .tlsFailure: "tlsFailure"
        case .tooManyRedirects: "tooManyRedirects"
        case .bodyTooLarge: "bodyTooLarge"
        case .cancelled: "cancelled"
        case .deadlineExceeded: "deadlineExceeded"
        case .upstreamClosed: "upstreamClosed"
        case .invalidResponse: "invalidResponse"
        case .transferFailed: "transferFailed"
        case .clientShutDown: "clientShutDown"
        }
    }
}
