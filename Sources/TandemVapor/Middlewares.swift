#if VaporAdapter
import Foundation
import HTTPTypes
import Logging
import Tandem
import TandemHTTP
import TandemNIO
import Vapor

/// Caches whole responses in a Tandem cache, as Django's `cache_page` / `CacheMiddleware` do (the
/// same rules as TandemHummingbird's middleware): GET and HEAD, `200` responses, keyed by method,
/// host, path and query and the request headers the response's `Vary` names; the handler's
/// `Cache-Control: private`, `no-store`, `no-cache` and `max-age` are honoured; a response that sets a
/// cookie is never stored. What it serves carries `Cache-Control: max-age` and, from the cache,
/// `Age`. Only buffered bodies up to `maxBodyBytes` are stored (a streamed body passes through).
///
/// ```swift
/// app.middleware.use(TandemResponseCacheMiddleware(cache: caches["pages"], timeout: .seconds(60)))
/// ```
public struct TandemResponseCacheMiddleware: AsyncMiddleware {
    let pages: PageCache
    let maxBodyBytes: Int

    /// - Parameters:
    ///   - cache: where pages are kept.
    ///   - timeout: how long a page is kept when the handler names no `max-age` (Django's 600 s).
    ///   - keyPrefix: put in front of every key (Django's `CACHE_MIDDLEWARE_KEY_PREFIX`).
    ///   - maxBodyBytes: larger bodies are served but not stored.
    public init(cache: Tandem.Cache, timeout: Duration = .seconds(600), keyPrefix: String = "", maxBodyBytes: Int = 1 << 20) {
        pages = PageCache(cache: cache, timeout: timeout, keyPrefix: keyPrefix, label: "tandem.vapor.page-cache")
        self.maxBodyBytes = maxBodyBytes
        NIOLoopGuard.install()
    }

    public func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        guard let method = HTTPTypes.HTTPRequest.Method(request.method.rawValue), method == .get || method == .head else {
            return try await next.respond(to: request)
        }
        let authority = request.headers.first(name: .host) ?? ""
        let path = request.url.string
        let requestFields = HeaderConversion.fields(request.headers)
        if let page = await pages.lookup(method: method, authority: authority, path: path, headers: requestFields) {
            var headers = HeaderConversion.headers(page.headers)
            headers.replaceOrAdd(name: "Age", value: String(page.age))
            // The whole body, for HEAD too: Vapor leaves it out of a HEAD answer and keeps the
            // Content-Length the GET would have, as it does for an answer that is not cached.
            return Response(status: HTTPResponseStatus(statusCode: page.status), headers: headers, body: .init(data: Data(page.body)))
        }
        let response = try await next.respond(to: request)
        let responseFields = HeaderConversion.fields(response.headers)
        guard PageCache.storableTimeout(method: method, requestHeaders: requestFields, status: Int(response.status.code),
                                        headers: responseFields, defaultTimeout: pages.timeout) != nil,
              let buffer = response.body.buffer, buffer.readableBytes <= maxBodyBytes
        else { return response }
        let sent = await pages.store(method: method, authority: authority, path: path, requestHeaders: requestFields,
                                     status: Int(response.status.code), headers: responseFields,
                                     body: Array(buffer.readableBytesView))
        response.headers = HeaderConversion.headers(sent)
        return response
    }
}

/// Turns Tandem's errors in a route into answers that say what failed, logged at error level with
/// their cause: a cache or upstream that is down or slow is a `503`, `502` or `504`, not an
/// anonymous `500`; a mistake in the route (a bad key, a blocking call where it must not block)
/// stays a `500`. Clients get the status only; the log has the details. Other errors pass through to
/// Vapor's `ErrorMiddleware`. Add it after `ErrorMiddleware` (so that it runs inside it).
///
/// The order of the middlewares does not decide what a client sees: Tandem's errors are Vapor
/// `AbortError`s with the same statuses and only the status's phrase as their reason, so that an
/// error thrown outside this middleware (by the session middleware before it, say) reaches Vapor's
/// `ErrorMiddleware` as the same status, with no server address in the body.
public struct TandemErrorMiddleware: AsyncMiddleware {
    /// The middleware.
    public init() { NIOLoopGuard.install() }

    public func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        do {
            return try await next.respond(to: request)
        } catch {
            guard let status = ServerErrorStatus.status(for: error) else { throw error }
            request.logger.error("request failed on a Tandem error", metadata: [
                "error": "\(error)", "status": "\(status.code)", "path": "\(request.url.path)",
            ])
            throw Abort(HTTPResponseStatus(statusCode: status.code))
        }
    }
}

/// Tandem's errors as Vapor answers, whichever middleware sees them: the status ``TandemErrorMiddleware``
/// gives, and the status's phrase as the reason (the error's own text names servers and keys; it goes
/// to the log, never into a response body).
extension CacheError: AbortError {
    /// `503` for a cache server that failed, `500` for a mistake in the call.
    public var status: HTTPResponseStatus { ServerErrorStatus.vaporStatus(self) }
    /// The status's phrase only.
    public var reason: String { status.reasonPhrase }
}

extension UpstreamError: AbortError {
    /// `502`, `504` or `503` for an upstream that failed, `500` for a mistake in the request.
    public var status: HTTPResponseStatus { ServerErrorStatus.vaporStatus(self) }
    /// The status's phrase only.
    public var reason: String { status.reasonPhrase }
}

extension TandemError: AbortError {
    /// `503` for a loop that shut down, `500` for a blocking call where it must not block.
    public var status: HTTPResponseStatus { ServerErrorStatus.vaporStatus(self) }
    /// The status's phrase only.
    public var reason: String { status.reasonPhrase }
}

extension ServerErrorStatus {
    static func vaporStatus(_ error: any Error) -> HTTPResponseStatus {
        HTTPResponseStatus(statusCode: status(for: error)?.code ?? 500)
    }
}

/// NIO's `HTTPHeaders` to swift-http-types' `HTTPFields` and back (fields with invalid names are left out).
enum HeaderConversion {
    static func fields(_ headers: HTTPHeaders) -> HTTPFields {
        var out = HTTPFields()
        for (name, value) in headers {
            if let n = HTTPField.Name(name) { out.append(HTTPField(name: n, value: value)) }
        }
        return out
    }

    static func headers(_ fields: HTTPFields) -> HTTPHeaders {
        HTTPHeaders(fields.map { ($0.name.rawName, $0.value) })
    }
}
#endif
