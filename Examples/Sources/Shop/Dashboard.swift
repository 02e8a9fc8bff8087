import AsyncHTTPClient
import Foundation
import Hummingbird
import NIOCore
import Tandem

/// The dashboard: five services called at once, the page costing the slowest call, not the sum.
extension Shop {
    /// Calls `services` at once and returns each one's document (nil: failed, not 200, or late).
    typealias FanOut = @Sendable (_ services: [(name: String, url: String)], _ deadline: Duration) async -> [[UInt8]?]

    /// The recommendations part is cached: it changes slowly and is the costliest service.
    func dashboard(fetch: FanOut) async throws -> Response {
        let deadline = configuration.dashboardDeadline
        let services = configuration.upstreams
        let others = services.filter { $0.name != "recommendations" }
        let recommendations = services.filter { $0.name == "recommendations" }
        async let fetched = fetch(others, deadline)
        let cachedPart: [UInt8]? = try? await caches.default.async.getOrSet("dashboard:recommendations",
                                                                           timeout: configuration.recommendationsTimeout) {
            guard let document = await fetch(recommendations, deadline).first ?? nil else { throw MissingPart() }
            return document
        }
        var parts: [String: [UInt8]?] = ["recommendations": cachedPart]
        for (service, document) in zip(others, await fetched) { parts[service.name] = document }

        var body: [UInt8] = Array("{".utf8)
        var missing: [String] = []
        for name in ShopConfiguration.serviceNames {
            body += Array("\"\(name)\":".utf8)
            if let document = parts[name] ?? nil { body += document } else { body += Array("null".utf8); missing.append(name) }
            body += Array(",".utf8)
        }
        body += Array("\"missing\":[\(missing.map { "\"\($0)\"" }.joined(separator: ","))]}".utf8)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// Tandem's fan-out (libcurl's multi interface on Tandem's loop).
    var tandemFanOut: FanOut {
        { [http] services, deadline in
            let results = await http.async.fanOut(services.map { UpstreamRequest(.get, $0.url) }, deadline: deadline)
            return results.map { result in
                guard case .success(let response) = result, response.status == .ok else { return nil }
                return response.body
            }
        }
    }

    /// The same calls with async-http-client, each bounded by the same deadline.
    var ahcFanOut: FanOut {
        { [ahc] services, deadline in
            let timeout = TimeAmount.nanoseconds(deadline.components.seconds * 1_000_000_000 + deadline.components.attoseconds / 1_000_000_000)
            return await withTaskGroup(of: (Int, [UInt8]?).self) { group in
                for (index, service) in services.enumerated() {
                    group.addTask {
                        do {
                            let response = try await ahc.execute(HTTPClientRequest(url: service.url), timeout: timeout)
                            let body = try await response.body.collect(upTo: 1 << 20)
                            return (index, response.status == .ok ? Array(buffer: body) : nil)
                        } catch {
                            return (index, nil)
                        }
                    }
                }
                var out = [[UInt8]?](repeating: nil, count: services.count)
                for await (index, document) in group { out[index] = document }
                return out
            }
        }
    }
}

/// A dashboard part that could not be fetched (it is then not cached).
struct MissingPart: Error {}
