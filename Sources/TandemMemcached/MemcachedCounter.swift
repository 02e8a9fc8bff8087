/// What an incr or decr's reply means, for both faces: memcached counts in 64 unsigned bits, Tandem's
/// counters are `Int64`.
enum MemcachedCounter {
    enum Outcome: Equatable {
        /// The counter's new value.
        case value(Int64)
        /// The result went past `Int64.max` (only reachable from a value another client stored):
        /// send `undo` (the opposite delta) when there is one, and refuse the key as not an integer.
        case overflowed(undo: Int64?)
    }

    /// The outcome of a successful incr or decr by `delta` that returned `value`.
    static func outcome(_ value: UInt64, delta: Int64) -> Outcome {
        guard value <= UInt64(Int64.max) else { return .overflowed(undo: delta > 0 ? -delta : nil) }
        return .value(Int64(value))
    }
}
