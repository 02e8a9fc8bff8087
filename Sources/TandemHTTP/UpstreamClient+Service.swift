import Foundation
import HTTPTypes
import Logging
import ServiceLifecycle
import TandemCache
import TandemLoop
import Tracing

extension UpstreamClient: Service {
    /// Runs until the service group's graceful shutdown (or the task's cancellation), then shuts the
    /// client down with a 10 s grace period (see ``shutdown(gracePeriod:)``). The client works whether
    /// or not this ever runs. List it after its loop in a `ServiceGroup`, before the services that call it.
    public func run() async throws {
        try? await gracefulShutdown()
        await shutdown(gracePeriod: .seconds(10))
    }
}
