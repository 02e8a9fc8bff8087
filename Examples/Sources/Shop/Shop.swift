import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdAuth
import Logging
import NIOCore
import Synchronization
import Tandem
import TandemHummingbird

/// A signed-in visitor, kept in the session.
public struct ShopSession: Codable, Sendable, Equatable {
    public var user: String
}

/// The request context of the shop's routes: Hummingbird's, with sessions.
public typealias ShopContext = BasicSessionRequestContext<ShopSession, ShopSession>

/// A product, as the product page shows it.
struct Product: Codable, Sendable {
    var id: String
    var name: String
    var price: Int
    var description: String
}

/// The shop's views: what a real shop's Hummingbird service does with Tandem.
///
/// - `GET /product/:id`: the product page, through `getOrSet` on the `default` cache (Redis in the
///   example's settings): a miss loads it from the "database" (`productLoadTime`), a hit is one read.
/// - `GET /product-nocache/:id`: the same answer made on every request with no cache and no database,
///   the floor the benchmark compares the product page with (what the framework alone costs).
/// - `GET /dashboard`: five upstream services at once with Tandem's fan-out and a deadline, the
///   recommendations part cached for `recommendationsTimeout`; a service that is down or late is
///   listed under `missing`, the page still answers.
/// - `GET /dashboard-ahc`: the same view with async-http-client doing the calls (the Swift peer).
/// - `POST /login?user=NAME`, `GET /me`, `POST /logout`: sessions through Hummingbird's session
///   middleware on `TandemPersistDriver` over the `sessions` cache (memcached in the example's settings).
/// - `GET /about`: a page cached whole by `TandemResponseCacheMiddleware` (the `pages` cache).
/// - `POST /visits`, `GET /visits`: a counter through `incr`.
/// - `GET /metrics`: every series in Prometheus's text format, when the shop has ``ShopMetrics``.
public struct Shop: Sendable {
    public let caches: Caches
    public let http: UpstreamClient
    public let ahc: AsyncHTTPClient.HTTPClient
    public let configuration: ShopConfiguration
    /// Served on `GET /metrics` (nil: no such route).
    public let metrics: ShopMetrics?
    let renders = Renders()

    public init(caches: Caches, http: UpstreamClient, ahc: AsyncHTTPClient.HTTPClient, configuration: ShopConfiguration,
                metrics: ShopMetrics? = nil) {
        self.caches = caches
        self.http = http
        self.ahc = ahc
        self.configuration = configuration
        self.metrics = metrics
    }

    /// The router with every view and middleware.
    public func router() throws -> Router<ShopContext> {
        let router = Router(context: ShopContext.self)
        router.add(middleware: TandemErrorMiddleware())
        router.add(middleware: SessionMiddleware(storage: TandemPersistDriver(cache: try caches["sessions"])))

        router.get("/product/:id") { _, context in try await productPage(try context.parameters.require("id")) }
        router.get("/product-nocache/:id") { _, context in try productResponse(Product.make(try context.parameters.require("id"))) }
        router.get("/dashboard") { _, _ in try await dashboard(fetch: tandemFanOut) }
        router.get("/dashboard-ahc") { _, _ in try await dashboard(fetch: ahcFanOut) }

        router.post("/login") { request, context -> Response in
            guard let user = request.uri.queryParameters.get("user"), !user.isEmpty else { throw HTTPError(.badRequest) }
            context.sessions.createSession(ShopSession(user: user), expiresIn: .seconds(3600))
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "signed in as \(user)")))
        }
        router.get("/me") { _, context -> String in
            guard let session = context.sessions.session else { throw HTTPError(.unauthorized) }
            return session.user
        }
        router.post("/logout") { _, context -> HTTPResponse.Status in
            context.sessions.clearSession()
            return .ok
        }

        router.group("/about").add(middleware: TandemResponseCacheMiddleware(cache: try caches["pages"], timeout: .seconds(60)))
            .get { _, _ -> String in "About the shop (rendered \(renders.next()) times)" }

        router.post("/visits") { _, _ -> String in
            let visits = caches.default.async
            _ = try await visits.add("visits", 0, timeout: .never)
            return String(try await visits.incr("visits"))
        }
        router.get("/visits") { _, _ -> String in String(try await caches.default.async.get("visits", default: 0)) }
        if let metrics {
            router.get("/metrics") { _, _ -> Response in
                Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                         body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
            }
        }
        return router
    }

    // MARK: the product page

    private func productPage(_ id: String) async throws -> Response {
        let loadTime = configuration.productLoadTime
        let body: [UInt8] = try await caches.default.async.getOrSet("product:\(id)", timeout: configuration.productTimeout) {
            try await Task.sleep(for: loadTime)  // the database query a miss pays
            return Array(try Product.encoder.encode(Product.make(id)))
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    private func productResponse(_ product: Product) throws -> Response {
        let body = try Product.encoder.encode(product)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

extension Product {
    /// Keys in a fixed order, so that every path answers the same bytes.
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        return e
    }()

    /// The product `id`, as the "database" has it.
    static func make(_ id: String) -> Product {
        Product(id: id, name: "Product \(id)", price: 100 + (id.utf8.reduce(0) { $0 &+ Int($1) } % 900),
                description: "A fine product, number \(id), in stock and shipped within two days.")
    }
}

/// Counts renders of the about page (a cached page is not rendered again).
final class Renders: Sendable {
    private let count = Mutex(0)
    func next() -> Int { count.withLock { $0 += 1; return $0 } }
}
