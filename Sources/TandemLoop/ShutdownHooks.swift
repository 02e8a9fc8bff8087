/// The shutdown hooks of one loop (see ``TandemEventLoop/onShutdown(_:)``): both loops keep theirs here and
/// touch it only on their own thread.
struct ShutdownHooks {
    private var hooks: [UInt64: @Sendable () -> Void] = [:]
    private var ran = false

    /// Keeps `hook` under `id`, or runs it at once when the hooks have already run.
    mutating func add(_ id: UInt64, _ hook: @escaping @Sendable () -> Void) -> ShutdownHookID {
        if ran { hook() } else { hooks[id] = hook }
        return ShutdownHookID(raw: id)
    }

    mutating func remove(_ id: ShutdownHookID) { hooks.removeValue(forKey: id.raw) }

    /// True once ``takeAll()`` was called.
    var haveRun: Bool { ran }

    /// Every hook, in the order they were added, for the caller to run once (outside this value: a
    /// hook may remove itself, or add another, which then runs at once).
    mutating func takeAll() -> [@Sendable () -> Void] {
        ran = true
        defer { hooks = [:] }
        return hooks.sorted { $0.key < $1.key }.map(\.value)
    }
}
