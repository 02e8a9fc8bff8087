import Tracing

/// Spans for cache operations (apple's swift-distributed-tracing): one `cache.<operation>` span of kind
/// client per backend call, with the attributes `cache.alias`, `cache.operation` and, for reads,
/// `cache.hit`; on a backend with a near cache, a `get` that hit says whether the near cache answered
/// (`tandem.cache.near_hit`). Errors are recorded on the span. Without a tracer (none given and none bootstrapped)
/// nothing is traced and nothing is paid.
package enum CacheTracing {
    /// The tracer a cache uses: the one its settings give, else the bootstrapped one, else none.
    package static func resolve(_ given: (any Tracer)?) -> (any Tracer)? {
        if let given { return given }
        let global = InstrumentationSystem.tracer
        return global is NoOpTracer ? nil : global
    }

    static func span<T: Tracer, R>(_ tracer: T, _ op: CacheOp, alias: String, nearCache: Bool,
                                   _ body: () throws -> R) throws -> R {
        try tracer.withSpan("cache.\(op.name)", ofKind: .client) { span in
            span.attributes["cache.alias"] = alias
            span.attributes["cache.operation"] = op.name
            let r = try body()
            record(r, op, nearCache: nearCache, on: span)
            return r
        }
    }

    static func span<T: Tracer, R>(_ tracer: T, _ op: CacheOp, alias: String, nearCache: Bool,
                                   _ body: () async throws -> R) async throws -> R {
        try await tracer.withSpan("cache.\(op.name)", ofKind: .client) { span in
            span.attributes["cache.alias"] = alias
            span.attributes["cache.operation"] = op.name
            let r = try await body()
            record(r, op, nearCache: nearCache, on: span)
            return r
        }
    }
}

extension CacheTracing {
    /// A read's outcome on its span: hit or miss, and for a `get` on a backend with a near cache,
    /// whether the near cache answered.
    private static func record<R>(_ r: R, _ op: CacheOp, nearCache: Bool, on span: some Span) {
        guard let o = r as? any TracedOptional else { return }
        span.attributes["cache.hit"] = !o.isNil
        if nearCache, op == .get, let stored = r as? StoredValue {
            span.attributes["tandem.cache.near_hit"] = stored.servedFromNearCache
        }
    }
}

/// Lets a span tell a miss (nil) from a hit without knowing the value's type.
protocol TracedOptional {
    var isNil: Bool { get }
}

extension Optional: TracedOptional {
    var isNil: Bool { self == nil }
}
