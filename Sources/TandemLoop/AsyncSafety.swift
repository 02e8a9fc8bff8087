import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a blocking call does when it is made from inside a Swift task.
public enum AsyncUnsafePolicy: String, Sendable, CaseIterable {
    /// Throw ``TandemError/blockingCallInAsyncContext(operation:site:)`` (the default).
    case error
    /// Log one warning per call site, then proceed.
    case warn
    /// Proceed silently.
    case allow

    /// Parses a policy from a setting string (`error`, `warn`, `allow`; `1`/`true` mean `allow`).
    public init?(settingValue: String) {
        switch settingValue.lowercased() {
        case "error", "0", "false", "": self = .error
        case "warn", "warning": self = .warn
        case "allow", "1", "true", "yes": self = .allow
        default: return nil
        }
    }
}

/// The async-safety guard: every blocking entry point that can wait on I/O calls
/// ``AsyncSafety/checkBlockingCall(_:policy:file:line:)`` first.
///
/// - On an event-loop thread the call always throws ``TandemError/blockingCallOnEventLoop(operation:site:)``:
///   waiting there for I/O that the same loop must drive is a deadlock.
/// - Inside a Swift task it applies the policy: the process-wide ``AsyncSafety/policy`` (initialised from
///   `TANDEM_ALLOW_ASYNC_UNSAFE`) unless the caller passes one (for example from a cache's settings).
public enum AsyncSafety {
    private static let state = Mutex<(policy: AsyncUnsafePolicy, warnedSites: Set<String>)>(
        (AsyncSafety.environmentPolicy(), [])
    )
    private static let logger = Logger(label: "tandem.async-safety")

    /// Reads `TANDEM_ALLOW_ASYNC_UNSAFE`: unset means `.error`, `warn` means `.warn`, `1`/`true`/`allow` mean `.allow`.
    public static func environmentPolicy() -> AsyncUnsafePolicy {
        guard let raw = getenv("TANDEM_ALLOW_ASYNC_UNSAFE") else { return .error }
        return AsyncUnsafePolicy(settingValue: String(cString: raw)) ?? .error
    }

    /// The process-wide policy for blocking calls made inside Swift tasks.
    public static var policy: AsyncUnsafePolicy {
        get { state.locked { $0.policy } }
        set { state.locked { $0.policy = newValue } }
    }

    /// The call sites (`file:line`) the `.warn` policy has warned about so far.
    package static var warnedSites: Set<String> { state.locked { $0.warnedSites } }

    /// Checks, registered by other runtimes, that tell whether the current thread runs one of their
    /// event loops (a SwiftNIO loop, say). Until one is registered, the guard does not look at them.
    private static let loopThreadChecks = Mutex<[@Sendable () -> Bool]>([])
    @usableFromInline static let hasLoopThreadChecks = Atomic<Bool>(false)

    /// Teaches the guard to recognise another runtime's event-loop threads: a blocking call made on a
    /// thread for which `isLoopThread` returns true is refused with
    /// ``TandemError/blockingCallOnEventLoop(operation:site:)``, as on Tandem's own loops, whatever the
    /// policy. `isLoopThread` must be cheap and must not block (it runs on every blocking call).
    /// The Hummingbird and Vapor adapters register SwiftNIO's (`MultiThreadedEventLoopGroup.currentEventLoop != nil`).
    public static func recogniseEventLoopThreads(_ isLoopThread: @escaping @Sendable () -> Bool) {
        loopThreadChecks.locked { $0.append(isLoopThread) }
        hasLoopThreadChecks.store(true, ordering: .releasing)
    }

    /// True when the current thread runs a Tandem event loop, or one that
    /// ``recogniseEventLoopThreads(_:)`` was taught.
    public static var onEventLoopThread: Bool {
        if LoopThread.current != nil { return true }
        guard hasLoopThreadChecks.load(ordering: .acquiring) else { return false }
        return loopThreadChecks.locked { $0 }.contains { $0() }
    }

    /// True when a blocking call made here needs no judging at all: not a loop thread (Tandem's, or one
    /// a runtime taught the guard) and not inside a Swift task, the case of every blocking caller that
    /// is where it should be. Inlined into the cache's blocking methods, so that the guard costs them
    /// two thread-local reads and an atomic load instead of a call.
    @inlinable package static var isPlainThread: Bool {
        LoopThread.current == nil && !hasLoopThreadChecks.load(ordering: .acquiring) && !hasCurrentTask
    }

    /// Whether a Swift task runs on this thread. Matched with `if case`, not compared with `== nil`:
    /// the comparison is generic over `Optional` and goes through metadata lookups and value
    /// witnesses on every blocking call.
    @inlinable static var hasCurrentTask: Bool {
        withUnsafeCurrentTask { task in
            if case .some = task { return true }
            return false
        }
    }

    /// True when the caller runs inside a Swift task, and not in blocking code that a bridge runs
    /// inline on its own thread (`Bridge.offload` inside `Bridge.blocking`).
    public static var inSwiftTask: Bool { hasCurrentTask && !Bridge.inOffloadedCode }

    /// Refuses or reports a blocking call made where it would stall the loop or a cooperative thread.
    /// - Parameters:
    ///   - operation: what is about to block, for the message (e.g. `"redis GET"`).
    ///   - override: a policy overriding the process-wide one (from settings), or nil.
    ///   - file: the caller's file, named by a warning and a refusal (`#fileID` by default).
    ///   - line: the caller's line, named by a warning and a refusal.
    public static func checkBlockingCall(
        _ operation: @autoclosure () -> String,
        policy override: AsyncUnsafePolicy? = nil,
        file: String = #fileID, line: Int = #line
    ) throws {
        if onEventLoopThread {
            throw TandemError.blockingCallOnEventLoop(operation: operation(), site: "\(file):\(line)")
        }
        guard inSwiftTask else { return }
        let effective = override ?? policy
        switch effective {
        case .allow:
            return
        case .error:
            throw TandemError.blockingCallInAsyncContext(operation: operation(), site: "\(file):\(line)")
        case .warn:
            let site = "\(file):\(line)"
            let first = state.locked { $0.warnedSites.insert(site).inserted }
            if first {
                logger.warning(
                    "blocking call made from inside a Swift task; use the async face instead",
                    metadata: ["operation": "\(operation())", "site": "\(site)"])
            }
        }
    }
}

/// Marks the threads that run an event loop, so that the guard can recognise them.
/// A pthread key holds an unretained pointer to the loop object running on the thread.
@usableFromInline package enum LoopThread {
    @usableFromInline static let key: pthread_key_t = {
        var k = pthread_key_t()
        let rc = pthread_key_create(&k, nil)
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
        return k
    }()

    /// The loop running on the current thread (as an opaque identity), or nil.
    @inlinable package static var current: UnsafeMutableRawPointer? { pthread_getspecific(key) }

    /// Marks (or, with nil, unmarks) the current thread as running `loop`.
    package static func set(_ loop: UnsafeMutableRawPointer?) {
        pthread_setspecific(key, loop)
    }
}
