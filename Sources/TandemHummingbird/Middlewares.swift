#if HummingbirdAdapter
import Hummingbird
import Logging
import NIOCore
import Tandem
import TandemHTTP
import TandemNIO

/// Caches whole responses in a Tandem cache, as Django's `cache_page` / `CacheMiddleware` do: GET and
/// HEAD, `200` responses, keyed by method, host, path and query and the request headers the
/// response's `Vary` names; the handler's `Cache-Control: private`, `no-store`, `no-cache` and
/// `max-age` are honoured; a response that sets a cookie is never stored. What it serves carries
/// `Cache-Control: max-age` and, from the cache, `Age`. Only bodies of known length up to
/// `maxBodyBytes` are stored (a streamed body passes through). A cache that fails is a miss.
///
/// ```swift
/// router.add(middleware: TandemResponseCacheMiddleware(cache: caches["pages"], timeout: .seconds(60)))
/// ```
public struct TandemResponseCacheMiddleware<Context: RequestContext>: RouterMiddleware {
    let pages: PageCache
    let maxBodyBytes: Int

    /// - Parameters:
    ///   - cache: where pages are kept.
    ///   - timeout: how long a page is kept when the handler names no `max-age` (Django's 600 s).
    ///   - keyPrefix: put in front of every key (Django's `CACHE_MIDDLEWARE_KEY_PREFIX`).
    ///   - maxBodyBytes: larger bodies are served but not stored.
    public init(cache: Tandem.Cache, timeout: Duration = .seconds(600), keyPrefix: String = "", maxBodyBytes: Int = 1 << 20) {
        pages = PageCache(cache: cache, timeout: timeout, keyPrefix: keyPrefix, label: "tandem.hummingbird.page-cache")
        self.maxBodyBytes = maxBodyBytes
        NIOLoopGuard.install()
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let method = request.method
        guard method == .get || method == .head else { return try await next(request, context) }
        let authority = request.head.authority ?? ""
        let path = request.uri.description
        if let page = await pages.lookup(method: method, authority: authority, path: path, headers: request.headers) {
            var headers = page.headers
            headers[.age] = String(page.age)
            let body = method == .head ? ResponseBody() : ResponseBody(byteBuffer: ByteBuffer(bytes: page.body))
            return Response(status: .init(code: page.status), headers: headers, body: body)
        }
        var response = try await next(request, context)
        guard PageCache.storableTimeout(method: method, requestHeaders: request.headers, status: response.status.code,
                                        headers: response.headers, defaultTimeout: pages.timeout) != nil,
              let length = response.body.contentLength, length <= maxBodyBytes
        else { return response }
        let collector = BodyCollector()
        try await response.body.write(CollectingWriter(sink: collector))
        let body = collector.bytes
        response.headers = await pages.store(method: method, authority: authority, path: path, requestHeaders: request.headers,
                                             status: response.status.code, headers: response.headers, body: body)
        response.body = ResponseBody(byteBuffer: ByteBuffer(bytes: body))
        return response
    }
}

/// Where ``CollectingWriter`` puts the bytes (a writer is consumed; the bytes outlive it).
private final class BodyCollector {
    var bytes: [UInt8] = []
}

private struct CollectingWriter: ResponseBodyWriter {
    let sink: BodyCollector
    mutating func write(_ buffer: ByteBuffer) async throws { sink.bytes += buffer.readableBytesView }
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

/// Turns Tandem's errors in a handler into answers that say what failed, logged at error level with
/// their cause: a cache or upstream that is down or slow is a `503`, `502` or `504` (the server's
/// dependency failed), not an anonymous `500` logged at debug level; a mistake in the handler (a bad
/// key, a blocking call in async code) stays a `500`. Clients get the status and its phrase only;
/// the log has the details. Other errors pass through untouched.
///
/// ```swift
/// router.add(middleware: TandemErrorMiddleware())
/// ```
public struct TandemErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    /// The middleware.
    public init() { NIOLoopGuard.install() }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            guard let status = ServerErrorStatus.status(for: error) else { throw error }
            context.logger.error("request failed on a Tandem error", metadata: [
                "error": "\(error)", "status": "\(status.code)", "path": "\(request.uri.path)",
            ])
            throw HTTPError(status)
        }
    }
}
#endif
