import Dispatch
import Foundation
import Synchronization

/// The shared loop wherever an event loop is expected: `let loop: any TandemEventLoop = .shared`,
/// `UpstreamClient(loop: .shared)`. (The design's `TandemEventLoop.shared`: Swift does not allow a static
/// member on a protocol's own name, so it is spelled `.shared` in context, or ``EventLoops/shared``.)
extension TandemEventLoop where Self == EpollEventLoop {
    /// ``EventLoops/shared``.
    public static var shared: EpollEventLoop { EventLoops.shared }
}

/// The process-wide loops.
public enum EventLoops {
    /// The shared default loop (an ``EpollEventLoop``), started on first use and kept for the life of
    /// the process. Everything that waits on sockets uses it unless given another loop.
    public static let shared: EpollEventLoop = processWide(EpollEventLoop(name: "tandem-shared-loop"))

    /// The process-wide loops and group: a service group's graceful shutdown leaves them running (as
    /// SwiftNIO's singleton group refuses to shut down), so that an application that stops does not
    /// stop the loops another one in the same process still uses. ``EpollEventLoop/shutdown()`` still
    /// stops one when called directly.
    private static let processWideObjects = Mutex<Set<ObjectIdentifier>>([])

    private static func processWide<T: AnyObject>(_ object: T) -> T {
        processWideObjects.locked { _ = $0.insert(ObjectIdentifier(object)) }
        return object
    }

    /// Whether `object` is ``shared``, ``group`` or one of its loops.
    static func belongsToProcess(_ object: AnyObject) -> Bool {
        processWideObjects.locked { $0.contains(ObjectIdentifier(object)) }
    }

    /// The most loops ``group`` starts by default, however many cores there are. Each loop keeps its
    /// own connection to every Redis server and its own curl connection cache, and one loop already
    /// drives well over a hundred thousand Redis GETs a second (BENCHMARKS.md, "A loop per core"):
    /// past 8 the servers, not the client's loops, are what a request waits on, while connections
    /// keep multiplying. `TANDEM_EVENT_LOOPS` sets any count from 1 to 256.
    public static let maximumDefaultLoops = 8

    /// The process-wide loop group: ``shared`` and, on a machine with more cores, more loops
    /// (`tandem-shared-loop-1`, ...): one per core up to ``maximumDefaultLoops``, or
    /// `TANDEM_EVENT_LOOPS` when set. Redis caches and upstream clients made without a loop use it.
    /// The loops beyond the first start when the group is first used.
    public static let group: TandemEventLoopGroup = {
        let count: Int
        do {
            count = try loopCount(environment: ProcessInfo.processInfo.environment)
        } catch {
            // Settings read through `Caches.fromEnvironment` or `CacheSettings(url:)` report this as a
            // typed error first; code that reaches the group without them learns it here.
            preconditionFailure("\(error)")
        }
        return processWide(TandemEventLoopGroup(loops: [shared] + (1..<max(1, count)).map { processWide(EpollEventLoop(name: "tandem-shared-loop-\($0)")) }))
    }()

    /// The size of ``group`` for `environment`: `TANDEM_EVENT_LOOPS` when set (1 to 256), else one
    /// per active core, at most ``maximumDefaultLoops``.
    /// - Throws: ``EventLoopSettingError`` when `TANDEM_EVENT_LOOPS` is not a whole number from 1 to 256.
    public static func loopCount(environment: [String: String]) throws -> Int {
        guard let raw = environment["TANDEM_EVENT_LOOPS"] else {
            return min(maximumDefaultLoops, max(1, ProcessInfo.processInfo.activeProcessorCount))
        }
        guard let n = Int(raw.trimmingCharacters(in: .whitespaces)), (1...256).contains(n) else {
            throw EventLoopSettingError(name: "TANDEM_EVENT_LOOPS", value: raw, reason: "must be a whole number of loops from 1 to 256")
        }
        return n
    }
}
