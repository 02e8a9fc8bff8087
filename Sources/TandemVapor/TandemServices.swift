#if VaporAdapter
import Synchronization
import Tandem
import TandemNIO
import Vapor

extension Application {
    /// Tandem's caches and upstream client for this application: stored on it, and shut down with it
    /// after Vapor has drained the requests in flight, with no code of yours.
    ///
    /// ```swift
    /// app.tandem.caches = try Caches.fromEnvironment()
    /// app.tandem.upstreamClient = UpstreamClient()
    /// app.caches.use(.tandem(try app.tandem.requireCaches().default))
    /// ```
    ///
    /// At shutdown (SIGTERM under `serve`, or `app.asyncShutdown()`), Vapor's HTTP server first stops
    /// taking connections and lets the requests in flight finish (its `shutdownTimeout`); then the
    /// caches and the client give their own calls in flight ``TandemServices/gracePeriod`` and close
    /// their connections. The process-wide loops (`EventLoops.group`) are not stopped: another
    /// application in the same process (a test's next `withApp`, say) keeps using them.
    public var tandem: TandemServices { TandemServices(application: self) }
}

/// See `Application.tandem`.
public struct TandemServices: Sendable {
    let application: Application

    final class Storage: Sendable {
        struct State {
            var caches: Caches?
            var client: UpstreamClient?
            var grace: Duration = .seconds(10)
        }
        let state = Mutex(State())
    }

    struct Key: StorageKey {
        typealias Value = Storage
    }

    private var storage: Storage {
        if let existing = application.storage[Key.self] { return existing }
        let made = Storage()
        application.storage[Key.self] = made
        application.lifecycle.use(TandemLifecycle(storage: made))
        return made
    }

    /// The application's caches (nil until set). Set them before the application boots.
    public var caches: Caches? {
        get { storage.state.locked { $0.caches } }
        nonmutating set { storage.state.locked { $0.caches = newValue } }
    }

    /// The application's upstream client (nil until set).
    public var upstreamClient: UpstreamClient? {
        get { storage.state.locked { $0.client } }
        nonmutating set { storage.state.locked { $0.client = newValue } }
    }

    /// How long the caches' and the client's calls still in flight get at shutdown, once Vapor has
    /// drained its requests (10 s by default).
    public var gracePeriod: Duration {
        get { storage.state.locked { $0.grace } }
        nonmutating set { storage.state.locked { $0.grace = newValue } }
    }

    /// The caches, or an error saying they were not set.
    public func requireCaches() throws -> Caches {
        guard let caches else { throw Abort(.internalServerError, reason: "app.tandem.caches is not set") }
        return caches
    }
}

/// Shuts Tandem down after Vapor's HTTP server has drained its requests. Vapor runs lifecycle
/// handlers' shutdown before it stops its server, so this one stops the server first (which Vapor's
/// own shutdown then finds already stopped).
struct TandemLifecycle: LifecycleHandler {
    let storage: TandemServices.Storage

    func shutdownAsync(_ application: Application) async {
        let (caches, client, grace) = storage.state.locked { ($0.caches, $0.client, $0.grace) }
        guard caches != nil || client != nil else { return }
        await application.server.shutdown()
        if let caches { _ = await caches.shutdown(gracePeriod: grace) }
        if let client { _ = await client.shutdown(gracePeriod: grace) }
    }
}
#endif
