import COpenSSL

#if canImport(Glibc)
import Glibc
#endif

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

/// What a TLS client trusts and shows: redis-py's `ssl_*` settings.
package struct TLSClientSettings: Sendable, Hashable {
    /// PEM file of the certificate authorities to trust; nil trusts the system's store.
    package var caFile: String?
    /// PEM file of a client certificate (chain) to show, for servers that ask for one.
    package var certificateFile: String?
    /// PEM file of the client certificate's private key (the certificate file when nil).
    package var keyFile: String?
    /// Check the server's certificate and name (`ssl_cert_reqs=required`, the default).
    package var verifyPeer: Bool
    /// Check that the certificate names the host connected to (`ssl_check_hostname`, true by
    /// default); false still checks the chain.
    package var checkHostname: Bool

    package init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, verifyPeer: Bool = true,
                 checkHostname: Bool = true) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.verifyPeer = verifyPeer
        self.checkHostname = checkHostname
    }
}

/// An OpenSSL client context made from ``TLSClientSettings``: the trusted CAs and the client
/// certificate are loaded once, when the cache is built, so that a missing or bad file is a settings
/// error and not a failure of every connection. Its one owner is this object; `deinit` frees it.
package final class TLSClientContext: @unchecked Sendable {
    // Why @unchecked Sendable is safe: the SSL_CTX is configured completely in init and never changed
    // afterwards; OpenSSL allows SSL_new on one configured context from many threads at once (the
    // context's reference count and session cache are locked internally).
    fileprivate let ctx: OpaquePointer
    package let settings: TLSClientSettings

    /// Builds the context. Throws a reason (naming the file) when a file cannot be used.
    package init(_ settings: TLSClientSettings) throws(TLSSetupError) {
        guard let method = TLS_client_method(), let c = SSL_CTX_new(method) else {
            throw TLSSetupError(reason: "OpenSSL could not make a TLS context: \(TLSClientContext.lastError())")
        }
        ctx = c
        self.settings = settings
        _ = copenssl_ctx_set_min_tls12(c)
        if let ca = settings.caFile {
            ERR_clear_error()
            if SSL_CTX_load_verify_locations(c, ca, nil) != 1 {
                throw TLSSetupError(reason: "cannot load the CA certificates from \(ca): \(TLSClientContext.lastError())")
            }
        } else if SSL_CTX_set_default_verify_paths(c) != 1 {
            throw TLSSetupError(reason: "cannot load the system's CA certificates: \(TLSClientContext.lastError())")
        }
        if let cert = settings.certificateFile {
            ERR_clear_error()
            if SSL_CTX_use_certificate_chain_file(c, cert) != 1 {
                throw TLSSetupError(reason: "cannot load the client certificate from \(cert): \(TLSClientContext.lastError())")
            }
            let key = settings.keyFile ?? cert
            if SSL_CTX_use_PrivateKey_file(c, key, copenssl_filetype_pem) != 1 {
                throw TLSSetupError(reason: "cannot load the client key from \(key) (is it the key of \(cert)?): \(TLSClientContext.lastError())")
            }
            if SSL_CTX_check_private_key(c) != 1 {
                throw TLSSetupError(reason: "the key in \(key) does not match the certificate in \(cert)")
            }
        } else if let key = settings.keyFile {
            throw TLSSetupError(reason: "a client key (\(key)) without a client certificate")
        }
        SSL_CTX_set_verify(c, settings.verifyPeer ? copenssl_verify_peer : copenssl_verify_none, nil)
    }

    deinit { SSL_CTX_free(ctx) }

    /// The oldest error on this thread's OpenSSL error queue, as text, and the queue emptied.
    static func lastError() -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return "no detail from OpenSSL" }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A TLS settings file or value that cannot be used.
package struct TLSSetupError: Error, Sendable {
    package let reason: String
}

/// One TLS session over a connected non-blocking socket, driven by its owner: a loop (the async
/// faces) or the calling thread with `poll` (the blocking faces). It never closes the socket, which
/// the owner keeps. Its one owner is the connection holding it; `deinit` frees the session.
package final class TLSSession {
    /// What a step of the session needs before it can go on.
    package enum Step: Equatable {
        case done
        /// Wait until the socket is readable, then repeat the call.
        case wantRead
        /// Wait until the socket is writable, then repeat the call.
        case wantWrite
    }

    private let ssl: OpaquePointer
    /// True once application data has arrived: a TLS error before it belongs to the handshake (with
    /// TLS 1.3 a server that refuses the client's certificate says so after the client's side of the
    /// handshake has finished).
    private var receivedData = false
    let verifies: Bool

    /// - Parameters:
    ///   - host: the name connected to: sent as SNI (when it is a DNS name) and checked against the
    ///     certificate (a DNS name or an IP address) when the context verifies peers.
    package init(context: TLSClientContext, fd: Int32, host: String) throws(TLSSetupError) {
        guard let s = SSL_new(context.ctx) else { throw TLSSetupError(reason: "OpenSSL could not make a session: \(TLSClientContext.lastError())") }
        ssl = s
        verifies = context.settings.verifyPeer
        _ = SSL_set_fd(s, fd)
        _ = copenssl_set_mode(s, copenssl_mode_partial_write | copenssl_mode_moving_buffer)
        let isIP = TLSSession.isIPAddress(host)
        if !isIP { _ = copenssl_set_sni(s, host) }
        if verifies && context.settings.checkHostname {
            let ok: Int32
            if isIP {
                ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), host)
            } else {
                ok = SSL_set1_host(s, host)
            }
            if ok != 1 { throw TLSSetupError(reason: "cannot check the certificate against '\(host)'") }
        }
    }

    deinit { SSL_free(ssl) }

    static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    /// One step of the client handshake.
    package func handshake() -> Result<Step, TLSFailure> {
        ERR_clear_error()
        let rc = SSL_connect(ssl)
        if rc == 1 { return .success(.done) }
        switch SSL_get_error(ssl, rc) {
        case copenssl_error_want_read: return .success(.wantRead)
        case copenssl_error_want_write: return .success(.wantWrite)
        case copenssl_error_syscall:
            let e = errno
            ERR_clear_error()
            return .failure(.handshakeFailed(e == 0 ? "the server closed the connection during the handshake" : String(cString: strerror(e))))
        default:
            return .failure(classifiedFailure())
        }
    }

    /// Names a failed handshake from the certificate check's result, or OpenSSL's error.
    private func classifiedFailure() -> TLSFailure {
        let detail = TLSClientContext.lastError()
        let verify = SSL_get_verify_result(ssl)
        if verifies && verify != copenssl_v_ok {
            let text = String(cString: X509_verify_cert_error_string(verify))
            if verify == copenssl_v_hostname_mismatch || verify == copenssl_v_ip_mismatch { return .nameMismatch(text) }
            return .untrustedPeer(text)
        }
        return .handshakeFailed(detail)
    }

    /// What a read or a write did.
    package enum IO {
        /// This many bytes were read or written.
        case bytes(Int)
        case wantRead
        case wantWrite
        /// The server ended the session (or closed the connection).
        case closed
        case failed(SessionFailure)
    }

    /// Why a session broke after the handshake: a TLS failure (the server refused the client's
    /// certificate, seen on the first read) or a connection error.
    package enum SessionFailure {
        case tls(TLSFailure)
        case connection(String)

        /// The typed error for a session with `server` that broke this way.
        package func error(server: String) -> CacheError {
            switch self {
            case .tls(let f): return .tls(server: server, failure: f)
            case .connection(let reason): return .connectionFailed(server: server, reason: reason)
            }
        }
    }

    package func read(into buffer: UnsafeMutableRawBufferPointer) -> IO {
        ERR_clear_error()
        let n = SSL_read(ssl, buffer.baseAddress, Int32(min(buffer.count, Int(Int32.max))))
        if n > 0 {
            receivedData = true
            return .bytes(Int(n))
        }
        return ioFailure(n)
    }

    package func write(_ bytes: UnsafeRawBufferPointer) -> IO {
        guard bytes.count > 0 else { return .bytes(0) }
        ERR_clear_error()
        let n = SSL_write(ssl, bytes.baseAddress, Int32(min(bytes.count, Int(Int32.max))))
        if n > 0 { return .bytes(Int(n)) }
        return ioFailure(n)
    }

    /// Bytes OpenSSL has decrypted and not yet handed out (no socket readiness will announce them).
    package var hasPendingBytes: Bool { SSL_pending(ssl) > 0 }

    private func ioFailure(_ rc: Int32) -> IO {
        switch SSL_get_error(ssl, rc) {
        case copenssl_error_want_read: return .wantRead
        case copenssl_error_want_write: return .wantWrite
        case copenssl_error_zero_return:
            // The server's close_notify: it ended the session. OpenSSL sets no errno for it.
            ERR_clear_error()
            if !receivedData { return .failed(.tls(.handshakeFailed("the server ended the TLS session before its first reply (does it require a client certificate?)"))) }
            return .closed
        case copenssl_error_syscall:
            let e = errno
            ERR_clear_error()
            if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return .wantRead }
            let what = e == 0 ? "the server closed the connection" : String(cString: strerror(e))
            // Before any reply, a server that hangs up refused the session: with TLS 1.3 a server
            // checks the client's certificate after the client's side of the handshake is done.
            if !receivedData { return .failed(.tls(.handshakeFailed("\(what) before its first reply (does it require a client certificate?)"))) }
            if e == 0 { return .closed }
            return .failed(.connection(what))
        default:
            let detail = TLSClientContext.lastError()
            return .failed(receivedData ? .connection("TLS error: \(detail)") : .tls(.handshakeFailed(detail)))
        }
    }
}
