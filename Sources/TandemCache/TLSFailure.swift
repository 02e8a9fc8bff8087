/// Why a TLS connection to a server could not be set up (see ``CacheError/tls(server:failure:)``).
public enum TLSFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The server's certificate does not lead to a trusted certificate authority (unknown CA,
    /// self-signed, expired): OpenSSL's verification message.
    case untrustedPeer(String)
    /// The certificate is trusted but names another host than the one connected to.
    case nameMismatch(String)
    /// The handshake failed for another reason: not a TLS server (or no answer to the handshake
    /// within the connect timeout), no protocol in common, or the server refused the client
    /// certificate (or its absence).
    case handshakeFailed(String)

    /// What failed and OpenSSL's reason, for logs and errors.
    public var description: String {
        switch self {
        case .untrustedPeer(let why): return "the server's certificate is not trusted (\(why))"
        case .nameMismatch(let why): return "the server's certificate is for another name (\(why))"
        case .handshakeFailed(let why): return "the TLS handshake failed (\(why))"
        }
    }
}

extension TLSFailure {
    /// A handshake that got no answer within the connect timeout: most likely not a TLS server.
    package static let unanswered = TLSFailure.handshakeFailed(
        "no answer to the TLS handshake within the connect timeout: does the server speak TLS on this port?")
}
