#if HummingbirdAdapter || VaporAdapter
import NIOPosix
import Tandem

/// Teaches Tandem's async-safety guard SwiftNIO's event-loop threads: after ``install()``, a blocking
/// Tandem call made on a NIO loop thread (a Vapor route written as a synchronous closure runs there) is
/// refused with `TandemError.blockingCallOnEventLoop`, whose message names `.async`, as on Tandem's own
/// loops, instead of stalling every connection of that loop. The Hummingbird and Vapor adapters install
/// it when they are set up; calling it again does nothing.
public enum NIOLoopGuard {
    private static let installed: Void = {
        AsyncSafety.recogniseEventLoopThreads { MultiThreadedEventLoopGroup.currentEventLoop != nil }
    }()

    /// Installs the check (once per process).
    public static func install() { _ = installed }
}
#endif
