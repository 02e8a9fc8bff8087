import Foundation
import Tandem

/// Connections the test upstream (Integration/upstream.py) has accepted: all of them, or, with
/// `client`, those whose requests carried the header `X-Client: client` (so that tests running at the
/// same time do not count each other's). -1 when the answer cannot be read. Asked with `asking` (a
/// client that is already connected, so that the question opens no connection of its own), or a new
/// client (whose connection counts when `client` is nil).
public func upstreamConnections(_ base: String, client: String? = nil, asking: UpstreamClient? = nil) async throws -> Int {
    let plain = asking ?? UpstreamClient(loop: TestLoops.epoll)
    let r = try await plain.async.get(base + "/stats" + (client.map { "?client=\($0)" } ?? ""))
    let json = try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Int]
    return json?[client == nil ? "connections" : "client_connections"] ?? -1
}
