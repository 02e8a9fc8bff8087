import Foundation
import Tandem

/// How the shop is set up: its caches come from Tandem's settings (`TANDEM_CACHES`), the rest from
/// `SHOP_*` variables.
public struct ShopConfiguration: Sendable {
    /// The five services the dashboard calls, by name, each with the URL of its document.
    public var upstreams: [(name: String, url: String)]
    /// The dashboard answers with what has arrived by then; the rest is reported missing.
    public var dashboardDeadline: Duration
    /// How long the "database" takes to load a product on a cache miss.
    public var productLoadTime: Duration
    /// How long a product stays cached.
    public var productTimeout: CacheTimeout
    /// How long the recommendations part of the dashboard stays cached.
    public var recommendationsTimeout: CacheTimeout

    /// The dashboard's services, each `<base>/<name>.json`.
    public static let serviceNames = ["users", "orders", "recommendations", "inventory", "reviews"]

    public init(upstreamBase: String, dashboardDeadline: Duration = .milliseconds(500), productLoadTime: Duration = .milliseconds(5),
                productTimeout: CacheTimeout = .seconds(300), recommendationsTimeout: CacheTimeout = .seconds(30)) {
        self.upstreams = Self.serviceNames.map { ($0, "\(upstreamBase)/\($0).json") }
        self.dashboardDeadline = dashboardDeadline
        self.productLoadTime = productLoadTime
        self.productTimeout = productTimeout
        self.recommendationsTimeout = recommendationsTimeout
    }

    /// `SHOP_UPSTREAM` (the base URL of the five documents; default `http://127.0.0.1:8081`) and
    /// `SHOP_DASHBOARD_DEADLINE_MS`.
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> ShopConfiguration {
        let base = env["SHOP_UPSTREAM"] ?? "http://127.0.0.1:8081"
        do {
            try UpstreamRequest(.get, base + "/users.json").validate()
        } catch {
            throw ShopError.badSetting("SHOP_UPSTREAM", base, "\(error)")
        }
        var c = ShopConfiguration(upstreamBase: base)
        if let raw = env["SHOP_DASHBOARD_DEADLINE_MS"] {
            guard let ms = Int(raw), ms > 0 else {
                throw ShopError.badSetting("SHOP_DASHBOARD_DEADLINE_MS", raw, "not a positive number of milliseconds")
            }
            c.dashboardDeadline = .milliseconds(ms)
        }
        return c
    }
}

/// What the shop refuses at start: a setting it does not understand is an error, never ignored.
public enum ShopError: Error, CustomStringConvertible {
    case badSetting(String, String, String)

    public var description: String {
        switch self {
        case .badSetting(let name, let value, let reason): "\(name)=\(value.debugDescription): \(reason)"
        }
    }
}
