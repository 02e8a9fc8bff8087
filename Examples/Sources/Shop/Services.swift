import AsyncHTTPClient
import Hummingbird
import Logging
import ServiceLifecycle
import Tandem

/// async-http-client's client as a service of the application, shut down with it.
public struct AsyncHTTPClientService: Service {
    public let client: AsyncHTTPClient.HTTPClient

    public init(client: AsyncHTTPClient.HTTPClient) { self.client = client }

    public func run() async throws {
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}

extension Shop {
    /// The shop as a Hummingbird application on `port`, with Tandem's caches and client (and
    /// async-http-client) as services: they stop on the application's graceful shutdown.
    public func application(host: String = "127.0.0.1", port: Int, logger: Logger = Logger(label: "shop")) throws -> some ApplicationProtocol {
        var app = Application(router: try router(), configuration: .init(address: .hostname(host, port: port)), logger: logger)
        app.addServices(caches, http, AsyncHTTPClientService(client: ahc))
        return app
    }
}
