/// Why a TLS connection to a server could not be set up (see ``CacheError/tls(server:failure:)``):
/// ``code`` says whether the server was not trusted, its certificate named another host, or the
/// handshake failed; ``reason`` is OpenSSL's explanation. New codes may come in any release, so a
/// `switch` over codes needs a `default`.
public struct TLSFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of TLS failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Hashable, Sendable {
            case untrustedPeer, nameMismatch, handshakeFailed
        }
        fileprivate let base: Base

        /// The server's certificate does not lead to a trusted certificate authority (unknown CA,
        /// self-signed, expired).
        public static var untrustedPeer: Code { Code(base: .untrustedPeer) }
        /// The certificate is trusted but names another host than the one connected to.
        public static var nameMismatch: Code { Code(base: .nameMismatch) }
        /// The handshake failed for another reason: not a TLS server (or no answer to the handshake
        /// within the connect timeout), no protocol in common, or the server refused the client
        /// certificate (or its absence).
        public static var handshakeFailed: Code { Code(base: .handshakeFailed) }
        /// The code's name (`untrustedPeer`, ...).
        public var description: String { base.rawValue }
    }

    /// What kind of TLS failure this is.
    public let code: Code
    /// OpenSSL's explanation (its verification message for an untrusted or misnamed certificate).
    public let reason: String

    private init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    /// The server's certificate does not lead to a trusted certificate authority: OpenSSL's
    /// verification message.
    public static func untrustedPeer(_ reason: String) -> TLSFailure { TLSFailure(.untrustedPeer, reason) }
    /// The certificate is trusted but names another host than the one connected to.
    public static func nameMismatch(_ reason: String) -> TLSFailure { TLSFailure(.nameMismatch, reason) }
    /// The handshake failed for another reason (see ``Code/handshakeFailed``).
    public static func handshakeFailed(_ reason: String) -> TLSFailure { TLSFailure(.handshakeFailed, reason) }

    /// What failed and OpenSSL's reason, for logs and errors.
    public var description: String {
        switch code {
        case .untrustedPeer: "the server's certificate is not trusted (\(reason))"
        case .nameMismatch: "the server's certificate is for another name (\(reason))"
        default: "the TLS handshake failed (\(reason))"
        }
    }
}

extension TLSFailure {
    /// A handshake that got no answer within the connect timeout: most likely not a TLS server.
    package static let unanswered = TLSFailure.handshakeFailed(
        "no answer to the TLS handshake within the connect timeout: does the server speak TLS on this port?")
}
