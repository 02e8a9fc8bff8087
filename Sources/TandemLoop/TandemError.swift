import Foundation
import ServiceLifecycle
import Synchronization

/// Errors raised by the loop, the bridges and the async-safety guard.
///
/// Tell errors apart by ``code``; new codes may come in any release, so a `switch` over codes needs a
/// `default`. The fields a code carries (``operation``, ``site``, ...) are set, the others nil.
public struct TandemError: Error, Equatable, CustomStringConvertible, Sendable {
    /// What kind of failure a ``TandemError`` is, without its details.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Hashable, Sendable {
            case blockingCallOnEventLoop, blockingCallInAsyncContext, loopShutDown, system
        }
        fileprivate let base: Base

        /// A blocking call was made on an event-loop thread, where it would deadlock the loop.
        public static var blockingCallOnEventLoop: Code { Code(base: .blockingCallOnEventLoop) }
        /// A blocking call was made from inside a Swift task while the policy is `.error`.
        public static var blockingCallInAsyncContext: Code { Code(base: .blockingCallInAsyncContext) }
        /// Work was submitted to a loop that has been shut down.
        public static var loopShutDown: Code { Code(base: .loopShutDown) }
        /// The operating system refused a loop operation.
        public static var system: Code { Code(base: .system) }
        /// The code's name (`loopShutDown`, ...).
        public var description: String { base.rawValue }
    }

    /// The failure and its details, one case per code: what Tandem's modules build and read.
    package enum Detail: Equatable, Sendable {
        case blockingCallOnEventLoop(operation: String, site: String?)
        case blockingCallInAsyncContext(operation: String, site: String?)
        case loopShutDown(loop: String)
        case system(operation: String, errno: Int32)
    }

    /// The failure and its details.
    package let detail: Detail

    /// An error of `detail`.
    package init(_ detail: Detail) { self.detail = detail }

    /// What kind of failure this is.
    public var code: Code {
        switch detail {
        case .blockingCallOnEventLoop: .blockingCallOnEventLoop
        case .blockingCallInAsyncContext: .blockingCallInAsyncContext
        case .loopShutDown: .loopShutDown
        case .system: .system
        }
    }

    /// A blocking call was made on an event-loop thread, where it would deadlock the loop.
    /// `site`: the caller's `file:line` (`#fileID`), where the call site is known.
    public static func blockingCallOnEventLoop(operation: String, site: String? = nil) -> TandemError {
        TandemError(.blockingCallOnEventLoop(operation: operation, site: site))
    }
    /// A blocking call was made from inside a Swift task while the policy is `.error`.
    /// `site`: the caller's `file:line` (`#fileID`), where the call site is known.
    public static func blockingCallInAsyncContext(operation: String, site: String? = nil) -> TandemError {
        TandemError(.blockingCallInAsyncContext(operation: operation, site: site))
    }
    /// Work was submitted to a loop that has been shut down.
    public static func loopShutDown(loop: String) -> TandemError { TandemError(.loopShutDown(loop: loop)) }
    /// The operating system refused a loop operation.
    public static func system(operation: String, errno: Int32) -> TandemError { TandemError(.system(operation: operation, errno: errno)) }

    /// The refused call (`blockingCallOnEventLoop`, `blockingCallInAsyncContext`) or the operating
    /// system's operation that failed (`system`).
    public var operation: String? {
        switch detail {
        case .blockingCallOnEventLoop(let op, _), .blockingCallInAsyncContext(let op, _), .system(let op, _): op
        case .loopShutDown: nil
        }
    }

    /// The refused call's `file:line`, where it is known (`blockingCallOnEventLoop`,
    /// `blockingCallInAsyncContext`).
    public var site: String? {
        switch detail {
        case .blockingCallOnEventLoop(_, let site), .blockingCallInAsyncContext(_, let site): site
        default: nil
        }
    }

    /// The loop that has shut down (`loopShutDown`).
    public var loop: String? {
        if case .loopShutDown(let loop) = detail { return loop }
        return nil
    }

    /// The operating system's error number (`system`).
    public var errno: Int32? {
        if case .system(_, let e) = detail { return e }
        return nil
    }

    /// A human-readable explanation naming the operation at fault.
    public var description: String {
        switch detail {
        case .blockingCallOnEventLoop(let op, let site):
            return "blocking call '\(op)'\(Self.at(site)) made on an event-loop thread: it would deadlock the loop; use the async face (`.async`) instead"
        case .blockingCallInAsyncContext(let op, let site):
            return "blocking call '\(op)'\(Self.at(site)) made from inside a Swift task: it would stall a cooperative thread; use the async face (`try await x.async...`), or set the async-unsafe policy to .warn/.allow (TANDEM_ALLOW_ASYNC_UNSAFE=1)"
        case .loopShutDown(let loop):
            return "event loop '\(loop)' has been shut down; no more work can be submitted"
        case .system(let op, let e):
            return "\(op) failed: \(Errno(e)) (errno \(e))"
        }
    }

    private static func at(_ site: String?) -> String { site.map { " at \($0)" } ?? "" }
}
