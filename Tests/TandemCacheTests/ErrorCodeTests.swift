import TandemCache
import TandemHTTP
import TandemLoop
import Testing

/// Errors are structs with a code: what a caller switches on, and the fields each code carries.
struct ErrorCodeTests {
    @Test func aCacheErrorCarriesItsCodeAndItsFields() {
        let setting = CacheError.invalidSetting(alias: "default", field: "TIMEOUT", reason: "not a number")
        #expect(setting.code == .invalidSetting)
        #expect(setting.kind == "invalidSetting")
        #expect(setting.alias == "default" && setting.field == "TIMEOUT" && setting.reason == "not a number")
        #expect(setting.key == nil && setting.server == nil && setting.size == nil)
        #expect(setting.description == "cache 'default': invalid setting TIMEOUT: not a number")

        let tooLarge = CacheError.valueTooLarge(key: "k", size: 10, limit: 5)
        #expect(tooLarge.code == .valueTooLarge && tooLarge.key == "k" && tooLarge.size == 10 && tooLarge.limit == 5)
        let pool = CacheError.poolExhausted(server: "127.0.0.1:6379", size: 4)
        #expect(pool.server == "127.0.0.1:6379" && pool.size == 4 && pool.limit == nil)
        let refused = CacheError.serverError(server: "s", message: "NOPERM")
        #expect(refused.reason == "NOPERM")
        let tls = CacheError.tls(server: "s", failure: .nameMismatch("n"))
        #expect(tls.tlsFailure == .nameMismatch("n"))
        let alias = CacheError.unknownAlias("x", known: ["default"])
        #expect(alias.alias == "x" && alias.known == ["default"])
        #expect(CacheError.missingKey("k").known == [])
        #expect(CacheError.shutDown("cache 'default'").subject == "cache 'default'")
        let decode = CacheError.decodingFailed(key: "k", type: "Int", reason: "r")
        #expect(decode.typeName == "Int" && decode.key == "k")
        #expect(CacheError.timeout(operation: "GET", server: "s").operation == "GET")
        #expect(CacheError.unknownBackend(alias: "a", backend: "mongo", known: []).backend == "mongo")
    }

    @Test func cacheErrorsAreEqualWhenTheirCodeAndFieldsAre() {
        #expect(CacheError.missingKey("a") == .missingKey("a"))
        #expect(CacheError.missingKey("a") != .missingKey("b"))
        #expect(CacheError.missingKey("a") != .notAnInteger(key: "a"), "same key, another code")
        #expect(CacheError.closed(alias: "a").code != CacheError.circuitOpen(alias: "a").code)
    }

    @Test func aSwitchOverCodesReadsLikeOneOverCases() {
        func status(_ error: CacheError) -> Int {
            switch error.code {
            case .timeout, .connectionFailed: 503
            case .missingKey: 404
            default: 500
            }
        }
        #expect(status(.timeout(operation: "GET", server: "s")) == 503)
        #expect(status(.missingKey("k")) == 404)
        #expect(status(.invalidKey(key: "a b", reason: "space")) == 500)
        #expect(CacheError.Code.timeout.description == "timeout")
    }

    @Test func anUpstreamErrorCarriesItsCodeAndItsFields() {
        let failed = UpstreamError.transferFailed(url: "http://a/", code: 56, reason: "recv failure")
        #expect(failed.code == .transferFailed && failed.kind == "transferFailed")
        #expect(failed.url == "http://a/" && failed.curlCode == 56 && failed.reason == "recv failure")
        #expect(failed.description == "request to http://a/ failed (curl 56): recv failure")
        let large = UpstreamError.bodyTooLarge(url: "http://a/", limit: 1024)
        #expect(large.limit == 1024 && large.reason == nil && large.curlCode == nil)
        #expect(UpstreamError.clientShutDown.url == nil && UpstreamError.clientShutDown.code == .clientShutDown)
        #expect(UpstreamError.invalidRequest(reason: "CR in a header").url == nil)
        #expect(UpstreamError.timeout(url: "http://a/") == .timeout(url: "http://a/"))
        #expect(UpstreamError.timeout(url: "http://a/") != .deadlineExceeded(url: "http://a/"))
    }

    @Test func theLoopsAndTLSErrorsHaveCodesToo() {
        let refused = TandemError.blockingCallInAsyncContext(operation: "cache 'default' get", site: "App/x.swift:3")
        #expect(refused.code == .blockingCallInAsyncContext && refused.operation == "cache 'default' get" && refused.site == "App/x.swift:3")
        #expect(refused.description.contains("at App/x.swift:3"))
        #expect(TandemError.blockingCallOnEventLoop(operation: "op").site == nil)
        #expect(TandemError.loopShutDown(loop: "l").loop == "l" && TandemError.loopShutDown(loop: "l").operation == nil)
        #expect(TandemError.system(operation: "epoll_ctl", errno: 9).errno == 9)
        #expect(TandemError.loopShutDown(loop: "a") != .loopShutDown(loop: "b"))
        let tls = TLSFailure.untrustedPeer("self-signed certificate")
        #expect(tls.code == .untrustedPeer && tls.reason == "self-signed certificate")
        #expect(tls.description == "the server's certificate is not trusted (self-signed certificate)")
        #expect(TLSFailure.handshakeFailed("x") != .nameMismatch("x"))
    }
}
