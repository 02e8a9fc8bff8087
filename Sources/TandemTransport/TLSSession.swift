import COpenSSL
import TandemCache
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

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
            let e = Errno.current
            ERR_clear_error()
            return .failure(.handshakeFailed(e.code == 0 ? "the server closed the connection during the handshake" : e.description))
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
            let e = Errno.current
            ERR_clear_error()
            if e.wouldBlock || e.isInterrupted { return .wantRead }
            let what = e.code == 0 ? "the server closed the connection" : e.description
            // Before any reply, a server that hangs up refused the session: with TLS 1.3 a server
            // checks the client's certificate after the client's side of the handshake is done.
            if !receivedData { return .failed(.tls(.handshakeFailed("\(what) before its first reply (does it require a client certificate?)"))) }
            if e.code == 0 { return .closed }
            return .failed(.connection(what))
        default:
            let detail = TLSClientContext.lastError()
            return .failed(receivedData ? .connection("TLS error: \(detail)") : .tls(.handshakeFailed(detail)))
        }
    }
}
