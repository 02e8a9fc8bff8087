import Foundation
import HTTPTypes
import Logging
import Synchronization
import TandemCache
import TandemLoop

extension UpstreamClient {
    /// The header fields `request` goes out with: the client's defaults, the request's own (which
    /// win), and the User-Agent libcurl adds when neither names one. What the shared response cache
    /// decides on (`Authorization`, `Vary`, `Range`, the request's `Cache-Control`).
    func sentHeaders(_ request: UpstreamRequest) -> HTTPFields {
        var sent = UpstreamRequest.merge(configuration.defaultHeaders, request.headers)
        if !sent.contains(.userAgent) { sent[.userAgent] = configuration.userAgent }
        return sent
    }
}
