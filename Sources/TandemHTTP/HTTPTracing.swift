import Synchronization
import TandemCache
import Tracing

/// Spans for upstream calls (apple's swift-distributed-tracing): one `HTTP <METHOD>` span of kind
/// client per call, with `http.request.method`, `url.full` (without credentials),
/// `http.response.status_code`, `tandem.http.attempts` (copies and retries included) and libcurl's
/// phase timings of the answer in milliseconds (`tandem.http.dns_ms`, `.connect_ms`, `.tls_ms`,
/// `.first_byte_ms`, `.total_ms`). A 5xx marks the span as an error; a thrown error is recorded.
enum HTTPTracing {
    /// Counts the attempts of the traced call in progress (read by every attempt, hedged copies too).
    @TaskLocal static var attempts: AttemptCounter?

    final class AttemptCounter: Sendable {
        private let count = Atomic<Int>(0)
        func bump() { count.add(1, ordering: .relaxed) }
        var value: Int { count.load(ordering: .relaxed) }
    }

    static func span<T: Tracer>(_ tracer: T, _ request: UpstreamRequest,
                                _ body: () async throws -> UpstreamResponse) async throws -> UpstreamResponse {
        let counter = AttemptCounter()
        return try await tracer.withSpan("HTTP \(request.method.rawValue)", ofKind: .client) { span in
            span.attributes["http.request.method"] = request.method.rawValue
            span.attributes["url.full"] = withoutCredentials(request.url)
            let response: UpstreamResponse
            do {
                response = try await $attempts.withValue(counter) { try await body() }
            } catch {
                span.attributes["tandem.http.attempts"] = counter.value
                throw error
            }
            span.attributes["tandem.http.attempts"] = counter.value
            span.attributes["http.response.status_code"] = response.status.code
            let t = response.timings
            span.attributes["tandem.http.dns_ms"] = ms(t.nameLookup)
            span.attributes["tandem.http.connect_ms"] = ms(t.connect)
            span.attributes["tandem.http.tls_ms"] = ms(t.tlsHandshake)
            span.attributes["tandem.http.first_byte_ms"] = ms(t.firstByte)
            span.attributes["tandem.http.total_ms"] = ms(t.total)
            if response.status.code >= 500 { span.setStatus(SpanStatus(code: .error)) }
            return response
        }
    }

    private static func ms(_ d: Duration) -> Double {
        Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
    }

    /// `scheme://user:password@host/...` without the `user:password@`.
    static func withoutCredentials(_ url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        let rest = url[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return url }
        return String(url[..<schemeEnd.upperBound]) + String(rest[rest.index(after: at)...])
    }
}
