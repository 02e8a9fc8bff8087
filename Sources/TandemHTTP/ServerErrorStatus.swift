import HTTPTypes
import TandemCache
import TandemLoop

/// The answer a server gives when a handler fails with one of Tandem's errors (the Hummingbird and Vapor
/// adapters answer so; a middleware for another server framework can too): a cache or upstream that is down or slow is the server's dependency failing
/// (503, 502, 504), not an anonymous 500; a mistake in the handler (a bad key, a blocking call in
/// async code) stays a 500. The reason is for the server's log; clients get only the status's phrase.
public enum ServerErrorStatus {
    /// The status for `error`, or nil when it is not one of Tandem's.
    public static func status(for error: any Error) -> HTTPResponse.Status? {
        switch error {
        case let e as CacheError:
            switch e.code {
            case .timeout, .connectionFailed, .tls, .serverError, .authenticationFailed, .poolExhausted, .circuitOpen,
                 .shutDown, .closed:
                return .serviceUnavailable
            default:
                return .internalServerError
            }
        case let e as UpstreamError:
            switch e.code {
            case .timeout, .deadlineExceeded: return .gatewayTimeout
            case .connectFailed, .dnsFailed, .tlsFailure, .tooManyRedirects, .bodyTooLarge, .upstreamClosed,
                 .invalidResponse, .transferFailed:
                return .badGateway
            case .clientShutDown: return .serviceUnavailable
            default: return .internalServerError
            }
        case let e as TandemError:
            if e.code == .loopShutDown { return .serviceUnavailable }
            return .internalServerError
        default:
            return nil
        }
    }
}
