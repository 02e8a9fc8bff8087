import Foundation
import ServiceLifecycle
import Synchronization

extension EpollEventLoop: Service {
    /// Runs until the service group's graceful shutdown (or the task's cancellation), then shuts the
    /// loop down: its shutdown hooks end the Redis commands and HTTP transfers still in flight on it
    /// with typed errors, and its thread ends. List it first in a `ServiceGroup`, so that it stops
    /// last, after the caches and clients that use it have drained. The process-wide loops
    /// (``EventLoops/shared``, ``EventLoops/group``'s) are left running: they belong to the process,
    /// and another application in it may still use them.
    public func run() async throws {
        try? await gracefulShutdown()
        if EventLoops.belongsToProcess(self) { return }
        await shutdownGracefully()
    }
}

extension DispatchEventLoop: Service {
    /// Runs until the service group's graceful shutdown (or the task's cancellation), then shuts the
    /// loop down; see ``EpollEventLoop/run()``.
    public func run() async throws {
        try? await gracefulShutdown()
        await shutdownGracefully()
    }
}
