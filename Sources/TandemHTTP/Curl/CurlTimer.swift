/// curl's one timeout as the loop keeps it, without the loop: a state machine that turns curl's timer
/// callback, the loop's timer firing and a queued job running into what the client must do next.
///
/// curl moves its timeout several times per request, mostly later. The loop timer is only armed again
/// when the deadline moves earlier; a timer that fires before a deadline that moved later arms itself
/// for the new one. A timeout of 0 ("as soon as possible", which every new transfer asks for) needs no
/// timer: one job queued on the loop serves every transfer added in the same turn.
package struct CurlTimer: Sendable {
    /// When curl wants its timeout handled (monotonic nanoseconds); nil: it wants none.
    package private(set) var deadline: UInt64?
    /// When the armed loop timer fires; nil: no timer is armed.
    package private(set) var armedFor: UInt64?
    /// A job that runs curl's timeout later in this loop turn is queued.
    package private(set) var jobQueued = false

    /// An idle timer.
    package init() {}

    /// What the client does after curl's timer callback.
    package enum Action: Equatable, Sendable {
        /// Nothing: no timeout, or the armed timer fires in time.
        case none
        /// Queue a job on the loop that calls ``jobRan(now:)``.
        case queueJob
        /// Cancel the armed timer, if any, and arm one that fires at this monotonic time.
        case arm(at: UInt64)
    }

    /// curl's timer callback: curl wants its timeout handled `ms` milliseconds after `now` (-1: never).
    package mutating func curlAsked(ms: Int, now: UInt64) -> Action {
        guard ms >= 0 else {
            deadline = nil
            return .none
        }
        let due = now &+ UInt64(ms) &* 1_000_000
        deadline = due
        if ms == 0 {
            if jobQueued { return .none }
            jobQueued = true
            return .queueJob
        }
        return armIfLate(due)
    }

    /// The loop refused the queued job (it is stopping): the timer takes over.
    package mutating func jobRefused() -> Action {
        jobQueued = false
        guard let deadline else { return .none }
        return armIfLate(deadline)
    }

    /// The queued job runs: true when curl's timeout is due (the client calls curl with
    /// CURL_SOCKET_TIMEOUT).
    package mutating func jobRan(now: UInt64) -> Bool {
        jobQueued = false
        guard let due = deadline, due <= now else { return false }
        deadline = nil
        return true
    }

    /// What the client does when the armed timer fires.
    package enum Fired: Equatable, Sendable {
        /// Nothing is due any more.
        case nothing
        /// Call curl with CURL_SOCKET_TIMEOUT.
        case runCurl
        /// The deadline moved later: arm a timer for it.
        case arm(at: UInt64)
    }

    /// The armed timer fired at `now`.
    package mutating func timerFired(now: UInt64) -> Fired {
        armedFor = nil
        guard let due = deadline else { return .nothing }
        if due > now {
            armedFor = due
            return .arm(at: due)
        }
        deadline = nil
        return .runCurl
    }

    /// The client cancelled the armed timer (it closes).
    package mutating func cancelled() {
        armedFor = nil
        deadline = nil
    }

    private mutating func armIfLate(_ due: UInt64) -> Action {
        if let armedFor, armedFor <= due { return .none }
        armedFor = due
        return .arm(at: due)
    }
}
