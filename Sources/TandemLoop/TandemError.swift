import Foundation
import ServiceLifecycle
import Synchronization

/// Errors raised by the loop, the bridges and the async-safety guard.
public enum TandemError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A blocking call was made on an event-loop thread, where it would deadlock the loop.
    /// `site`: the caller's `file:line` (`#fileID`), where the call site is known.
    case blockingCallOnEventLoop(operation: String, site: String? = nil)
    /// A blocking call was made from inside a Swift task while the policy is `.error`.
    /// `site`: the caller's `file:line` (`#fileID`), where the call site is known.
    case blockingCallInAsyncContext(operation: String, site: String? = nil)
    /// Work was submitted to a loop that has been shut down.
    case loopShutDown(loop: String)
    /// The operating system refused a loop operation.
    case system(operation: String, errno: Int32)

    /// A human-readable explanation naming the operation at fault.
    public var description: String {
        switch self {
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
