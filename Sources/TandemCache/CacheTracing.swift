import Tracing

/// Spans for cache operations (apple's swift-distributed-tracing): one `cache.<operation>` span of kind
/// client per backend call, with the attributes `cache.alias`, `cache.operation` and, for reads,
/// `cache.hit`. Errors are recorded on the span. Without a tracer (none given and none bootstrapped)
/// nothing is traced and nothing is paid.
package enum CacheTracing {
    /// The tracer a cache uses: the one its settings give, else the bootstrapped one, else none.
    package static func resolve(_ given: (any Tracer)?) -> (any Tracer)? {
        if let given { return given }
        let global = InstrumentationSystem.tracer
        return global is NoOpTracer ? nil : global
    }

    static func span<T: Tracer, R>(_ tracer: T, _ op: CacheOp, alias: String, _ body: () throws -> R) throws -> R {
        try tracer.withSpan("cache.\(op.name)", ofKind: .client) { span in
            span.attributes["cache.alias"] = alias
            span.attributes["cache.operation"] = op.name
            let r = try body()
            if let o = r as? any TracedOptional { span.attributes["cache.hit"] = !o.isNil }
            return r
        }
    }

    static func span<T: Tracer, R>(_ tracer: T, _ op: CacheOp, alias: String, _ body: () async throws -> R) async throws -> R {
        try await tracer.withSpan("cache.\(op.name)", ofKind: .client) { span in
            span.attributes["cache.alias"] = alias
            span.attributes["cache.operation"] = op.name
            let r = try await body()
            if let o = r as? any TracedOptional { span.attributes["cache.hit"] = !o.isNil }
            return r
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
