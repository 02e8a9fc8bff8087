import CCurl
import CCurlShim
import HTTPTypes
import TandemHTTP
import TandemLoop
import Testing

/// The HTTP client's decisions, without a socket, a loop or curl's transfer: when curl's timeout runs,
/// which sockets are watched, how a request sets a handle, and which error a failed transfer is.
struct CurlTimerTests {
    let ms: UInt64 = 1_000_000

    @Test func aTimeoutOfZeroQueuesOneJobPerTurnAndRunsCurlWhenDue() {
        var timer = CurlTimer()
        #expect(timer.curlAsked(ms: 0, now: 100) == .queueJob)
        #expect(timer.curlAsked(ms: 0, now: 100) == .none, "one job serves every transfer of the turn")
        let due = timer.jobRan(now: 100)
        #expect(due, "due: curl runs its timeout")
        #expect(timer.deadline == nil && !timer.jobQueued)
        #expect(timer.curlAsked(ms: 0, now: 200) == .queueJob, "the next turn queues again")
    }

    @Test func aJobThatFindsTheDeadlineMovedLaterDoesNotRunCurl() {
        var timer = CurlTimer()
        #expect(timer.curlAsked(ms: 0, now: 0) == .queueJob)
        #expect(timer.curlAsked(ms: 50, now: 0) == .arm(at: 50 * ms))
        let due = timer.jobRan(now: 1)
        #expect(!due, "not due yet")
        #expect(timer.deadline == 50 * ms)
    }

    @Test func theTimerIsArmedAgainOnlyWhenTheDeadlineMovesEarlier() {
        var timer = CurlTimer()
        #expect(timer.curlAsked(ms: 100, now: 0) == .arm(at: 100 * ms))
        #expect(timer.curlAsked(ms: 200, now: 0) == .none, "later: the armed timer re-arms itself when it fires")
        #expect(timer.curlAsked(ms: 10, now: 0) == .arm(at: 10 * ms), "earlier: armed again")
        #expect(timer.armedFor == 10 * ms)
    }

    @Test func aTimerThatFiresBeforeAMovedDeadlineArmsForItAndOneThatFiresLateRunsCurl() {
        var timer = CurlTimer()
        _ = timer.curlAsked(ms: 10, now: 0)
        _ = timer.curlAsked(ms: 30, now: 0)
        #expect(timer.timerFired(now: 10 * ms) == .arm(at: 30 * ms))
        #expect(timer.timerFired(now: 30 * ms) == .runCurl)
        #expect(timer.deadline == nil && timer.armedFor == nil)
        #expect(timer.timerFired(now: 40 * ms) == .nothing, "nothing is due")
    }

    @Test func curlTakingItsTimeoutBackLeavesNothingToRun() {
        var timer = CurlTimer()
        _ = timer.curlAsked(ms: 10, now: 0)
        #expect(timer.curlAsked(ms: -1, now: 1) == .none)
        #expect(timer.timerFired(now: 10 * ms) == .nothing)
    }

    @Test func aLoopThatRefusesTheJobLeavesTheTimeoutToATimer() {
        var timer = CurlTimer()
        #expect(timer.curlAsked(ms: 0, now: 5) == .queueJob)
        #expect(timer.jobRefused() == .arm(at: 5))
        #expect(!timer.jobQueued)
        #expect(timer.timerFired(now: 5) == .runCurl)
    }
}

struct CurlSocketsTests {
    let a = WatchID(raw: 1)

    @Test func aSocketIsWatchedForWhatCurlWantsAndChangedOnlyWhenThatChanges() {
        var sockets = CurlSockets()
        #expect(sockets.curlWants(.readWrite, fd: 7) == .watch([.read, .write]))
        sockets.watched(7, id: a, events: [.read, .write])
        #expect(sockets.curlWants(.readWrite, fd: 7) == .none)
        #expect(sockets.curlWants(.read, fd: 7) == .update(a, .read))
        #expect(sockets.ready(7) == .tellCurl)
    }

    @Test func aConnectionCurlKeepsAliveIsParkedAndItsWatchEndsWhenItFires() {
        var sockets = CurlSockets()
        #expect(sockets.opened(7) == nil)
        #expect(sockets.curlWants(.write, fd: 7) == .watch(.write))
        sockets.watched(7, id: a, events: .write)
        #expect(sockets.curlWants(.remove, fd: 7) == .update(a, .read), "parked: an idle socket is always writable")
        #expect(sockets.count == 1, "the watch is kept for the next request")
        #expect(sockets.curlWants(.read, fd: 7) == .none, "wanted again: no system call")
        #expect(sockets.curlWants(.remove, fd: 7) == .none)
        #expect(sockets.ready(7) == .unwatch(a), "the peer closed the idle connection: no spinning")
        #expect(sockets.count == 0)
        #expect(sockets.curlWants(.read, fd: 7) == .watch(.read), "a later request watches it anew")
    }

    @Test func anotherDescriptorIsUnwatchedAtRemove() {
        var sockets = CurlSockets()
        #expect(sockets.curlWants(.read, fd: 9) == .watch(.read))
        sockets.watched(9, id: a, events: .read)
        #expect(sockets.curlWants(.remove, fd: 9) == .unwatch(a), "curl's resolver pipe: closed without a close callback")
        #expect(sockets.curlWants(.remove, fd: 9) == .none)
    }

    @Test func closingAConnectionEndsItsWatchAndANumberReusedDropsAStaleOne() {
        var sockets = CurlSockets()
        _ = sockets.opened(7)
        sockets.watched(7, id: a, events: .read)
        #expect(sockets.closing(7) == a)
        #expect(sockets.closing(7) == nil)
        sockets.watched(8, id: WatchID(raw: 2), events: .read)
        #expect(sockets.opened(8) == WatchID(raw: 2), "a watch left on a number curl opens again belonged to a closed descriptor")
        sockets.watched(8, id: WatchID(raw: 3), events: .read)
        #expect(Set(sockets.removeAll()) == [WatchID(raw: 3)])
        #expect(sockets.count == 0)
    }
}

struct CurlRequestPlanTests {
    let defaults: HTTPFields = [.userAgent: "t"]

    @Test func aRepeatedPlainGetReusesTheHandleAsItIs() {
        let plan = CurlRequestPlan(UpstreamRequest(.get, "http://a/x"), defaultHeaders: defaults, defaultTimeout: .seconds(2))
        #expect(plan.isPlain && plan.headerLines == nil && plan.method == .withoutBody(custom: nil))
        #expect(plan.setup.timeoutMs == 2000)
        #expect(!plan.reuses(nil), "a new handle is set up")
        #expect(plan.reuses(plan.remembered))
        let other = CurlRequestPlan(UpstreamRequest(.get, "http://a/y"), defaultHeaders: defaults, defaultTimeout: .seconds(2))
        #expect(!other.reuses(plan.remembered), "another URL")
        let slower = CurlRequestPlan(UpstreamRequest(.get, "http://a/x", timeout: .milliseconds(1)), defaultHeaders: defaults, defaultTimeout: .seconds(2))
        #expect(!slower.reuses(plan.remembered) && slower.setup.timeoutMs == 1)
    }

    @Test func aRequestWithHeadersOrABodyIsNeverReused() {
        let headers = CurlRequestPlan(UpstreamRequest(.get, "http://a/", headers: [.accept: "text/plain"]), defaultHeaders: defaults, defaultTimeout: .seconds(1))
        #expect(!headers.isPlain && headers.remembered == nil)
        #expect(headers.headerLines == ["User-Agent: t", "Accept: text/plain", "Expect:"])
        #expect(!headers.reuses(headers.setup))
    }

    @Test func aBodySendsNoContentTypeItDidNotAskFor() {
        let post = CurlRequestPlan(UpstreamRequest(.post, "http://a/", body: [1, 2]), defaultHeaders: defaults, defaultTimeout: .seconds(1))
        #expect(post.method == .withBody(custom: nil))
        #expect(post.headerLines == ["User-Agent: t", "Content-Type:", "Expect:"])
        let json = CurlRequestPlan(UpstreamRequest(.put, "http://a/", headers: [.contentType: "application/json"], body: []),
                                   defaultHeaders: defaults, defaultTimeout: .seconds(1))
        #expect(json.method == .withBody(custom: "PUT"))
        #expect(json.headerLines == ["User-Agent: t", "Content-Type: application/json", "Expect:"])
        let emptyPatch = CurlRequestPlan(UpstreamRequest(.patch, "http://a/"), defaultHeaders: [:], defaultTimeout: .seconds(1))
        #expect(emptyPatch.method == .withBody(custom: "PATCH"), "PATCH defines a body: Content-Length: 0")
    }

    @Test func methodsWithoutABodyAndHead() {
        let delete = CurlRequestPlan(UpstreamRequest(.delete, "http://a/"), defaultHeaders: defaults, defaultTimeout: .seconds(1))
        #expect(delete.method == .withoutBody(custom: "DELETE") && delete.headerLines == nil && !delete.isPlain)
        let head = CurlRequestPlan(UpstreamRequest(.head, "http://a/"), defaultHeaders: defaults, defaultTimeout: .seconds(1))
        #expect(head.method == .head && head.isPlain)
    }

    @Test func headerLinesAsCurlTakesThem() {
        #expect(CurlRequestPlan.headerLine(HTTPField(name: .accept, value: "")) == "Accept;", "an empty value, not a removal")
        #expect(CurlRequestPlan.sharedHeaderLines([.userAgent: "t"]) == ["User-Agent: t", "Expect:"])
        #expect(CurlRequestPlan.milliseconds(.microseconds(10)) == 1, "never 0, which curl reads as no timeout")
    }
}

struct CurlErrorTests {
    func error(_ code: CURLcode, refusedBody: Bool = false) -> UpstreamError.Code {
        UpstreamError(curl: code, url: "http://a/", maxBody: 10, refusedBody: refusedBody).code
    }

    @Test func eachFailureOfCurlIsATypedError() {
        #expect(error(CURLE_COULDNT_CONNECT) == .connectFailed)
        #expect(error(CURLE_COULDNT_RESOLVE_HOST) == .dnsFailed)
        #expect(error(CURLE_OPERATION_TIMEDOUT) == .timeout)
        #expect(error(CURLE_TOO_MANY_REDIRECTS) == .tooManyRedirects)
        #expect(error(CURLE_PEER_FAILED_VERIFICATION) == .tlsFailure)
        #expect(error(CURLE_GOT_NOTHING) == .upstreamClosed)
        #expect(error(CURLE_RECV_ERROR) == .upstreamClosed)
        #expect(error(CURLE_WEIRD_SERVER_REPLY) == .invalidResponse)
        #expect(error(CURLE_URL_MALFORMAT) == .invalidURL)
        #expect(error(CURLE_FILESIZE_EXCEEDED) == .bodyTooLarge)
        #expect(error(CURLE_OUT_OF_MEMORY) == .transferFailed)
    }

    @Test func aWriteErrorIsABodyTooLargeOnlyWhenTheClientRefusedTheBytes() {
        let refused = UpstreamError(curl: CURLE_WRITE_ERROR, url: "http://a/", maxBody: 10, refusedBody: true)
        #expect(refused == .bodyTooLarge(url: "http://a/", limit: 10))
        let other = UpstreamError(curl: CURLE_WRITE_ERROR, url: "http://a/", maxBody: 10, refusedBody: false)
        #expect(other.code == .transferFailed && other.curlCode == Int(CURLE_WRITE_ERROR.rawValue))
        #expect(other.reason?.isEmpty == false, "curl's message")
    }

    @Test func aStatusSwiftHTTPTypesCannotHoldIsAnInvalidResponse() {
        #expect(UpstreamError.unusableStatus(200, url: "u") == nil)
        #expect(UpstreamError.unusableStatus(999, url: "u") == nil)
        #expect(UpstreamError.unusableStatus(42, url: "u")?.code == .invalidResponse)
        #expect(UpstreamError.unusableStatus(0, url: "u")?.code == .invalidResponse)
    }
}
