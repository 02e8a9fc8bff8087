import CCurl
import CCurlShim

extension UpstreamError {
    /// The error of a transfer that curl ended with `code` (not `CURLE_OK`). `refusedBody`: the write
    /// callback refused bytes past `maxBody` (curl then reports a write error).
    package init(curl code: CURLcode, url: String, maxBody: Int, refusedBody: Bool) {
        let reason = String(cString: curl_easy_strerror(code))
        switch code {
        case CURLE_WRITE_ERROR where refusedBody, CURLE_FILESIZE_EXCEEDED:
            self = .bodyTooLarge(url: url, limit: maxBody)
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            self = .dnsFailed(url: url, reason: reason)
        case CURLE_COULDNT_CONNECT:
            self = .connectFailed(url: url, reason: reason)
        case CURLE_OPERATION_TIMEDOUT:
            self = .timeout(url: url)
        case CURLE_TOO_MANY_REDIRECTS:
            self = .tooManyRedirects(url: url)
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
             CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS:
            self = .tlsFailure(url: url, reason: reason)
        case CURLE_GOT_NOTHING, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_PARTIAL_FILE, CURLE_HTTP2, CURLE_HTTP2_STREAM:
            self = .upstreamClosed(url: url, reason: reason)
        case CURLE_WEIRD_SERVER_REPLY, CURLE_UNSUPPORTED_PROTOCOL:
            // The URL's scheme was checked before any I/O: an unsupported protocol now means the
            // answer (bytes that are not HTTP, read as HTTP/0.9) or a redirect target was refused.
            self = .invalidResponse(url: url, reason: reason)
        case CURLE_URL_MALFORMAT:
            self = .invalidURL(url: url, reason: reason)
        default:
            self = .transferFailed(url: url, code: Int(code.rawValue), reason: reason)
        }
    }

    /// The error of a transfer curl completed with a status that is not HTTP's (curl reads any three
    /// digits; swift-http-types holds 100 to 999); nil for a status it can hold.
    package static func unusableStatus(_ status: Int, url: String) -> UpstreamError? {
        (100...999).contains(status) ? nil : .invalidResponse(url: url, reason: "status code \(status)")
    }
}
