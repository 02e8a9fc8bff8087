import CCurl
import CCurlShim
import Foundation
import HTTPTypes
import Logging
import Synchronization
import TandemLoop

/// libcurl's multi-socket interface driven by an event loop. Every curl call happens on the loop
/// thread; curl's socket and timer callbacks only register loop watches and timers (curl is never
/// called from inside its own callbacks).
final class CurlMulti: @unchecked Sendable {
    // Why @unchecked Sendable is safe: all mutable state is touched only on `loop`'s thread; the
    // public entry points hop there first (`withLoopPromise`, `execute`).
    let loop: any TandemEventLoop
    let configuration: UpstreamClientConfiguration
    private var multi: UnsafeMutableRawPointer?
    /// The loop watches of curl's sockets (``CurlSockets`` decides).
    private var sockets = CurlSockets()
    /// curl's timeout (``CurlTimer`` decides) and the loop timer armed for it.
    private var curlTimer = CurlTimer()
    private var timer: TimerID?
    private var active: [UnsafeMutableRawPointer: Transfer] = [:]
    private var freeHandles: [UnsafeMutableRawPointer] = []
    /// What each easy handle was last configured with, so that a reused handle only gets the options
    /// that differ (most requests of a client repeat the previous ones).
    private var setups: [UnsafeMutableRawPointer: CurlRequestPlan.Setup] = [:]
    private(set) var handlesCreated = 0
    private var closed = false
    private var hookID: ShutdownHookID?
    /// Transfers to start and transfers to abandon, queued by other threads; one loop job drains them
    /// (all the requests submitted while the loop was busy cost one job, not one closure each).
    private struct Incoming {
        var starts: [Transfer] = []
        var cancels: [Transfer] = []
        var drainQueued = false
    }
    private let incoming = Mutex(Incoming())
    /// The drained arrays, kept for their capacity (loop thread).
    private var spareStarts: [Transfer] = []
    private var spareCancels: [Transfer] = []
    private let logger = Logger(label: "tandem.http")

    private static let globalInit: Void = { _ = curl_global_init(Int(CURL_GLOBAL_ALL)) }()

    /// Whether the environment names a proxy (read once, when the first client starts). Without
    /// one, each handle is told "no proxy" outright: otherwise curl looks up five environment
    /// variables (and copies what it finds) for every request, to learn the same thing each time.
    private static let environmentNamesAProxy: Bool = {
        let names = ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"]
        return names.contains { getenv($0).map { $0.pointee != 0 } ?? false }
    }()

    init(loop: any TandemEventLoop, configuration: UpstreamClientConfiguration) {
        _ = CurlMulti.globalInit
        self.loop = loop
        self.configuration = configuration
    }

    private var me: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    /// Creates the multi handle on first use (on the loop thread).
    private func ensureMulti() -> UnsafeMutableRawPointer? {
        if let multi { return multi }
        guard !closed, let m = curl_multi_init() else { return nil }
        _ = ccurl_multi_setopt_socket_callback(m, curlSocketCallback)
        _ = ccurl_multi_setopt_pointer(m, CURLMOPT_SOCKETDATA, me)
        _ = ccurl_multi_setopt_timer_callback(m, curlTimerCallback)
        _ = ccurl_multi_setopt_pointer(m, CURLMOPT_TIMERDATA, me)
        if configuration.maxConnectionsPerHost > 0 {
            _ = ccurl_multi_setopt_long(m, CURLMOPT_MAX_HOST_CONNECTIONS, configuration.maxConnectionsPerHost)
        }
        if configuration.maxConnections > 0 {
            _ = ccurl_multi_setopt_long(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, configuration.maxConnections)
        }
        _ = ccurl_multi_setopt_long(m, CURLMOPT_MAXCONNECTS, max(1, configuration.maxIdleConnections))
        multi = m
        if hookID == nil {
            // A loop shut down under transfers in flight ends them with clientShutDown. The hook holds
            // this object until `close()` removes it.
            hookID = loop.onShutdown { [self] in close() }
        }
        return m
    }

    // MARK: curl callbacks (no curl calls in here)

    /// curl's socket callback: it wants `interest` on `fd`.
    func socketChanged(_ fd: Int32, _ interest: CurlSockets.Interest) {
        switch sockets.curlWants(interest, fd: fd) {
        case .none: break
        case .update(let id, let events): loop.updateWatch(id, events: events)
        case .unwatch(let id): loop.unwatch(id)
        case .watch(let events):
            do {
                let id = try loop.watch(fd, events: events) { [self] ready in socketReady(fd, ready) }
                sockets.watched(fd, id: id, events: events)
            } catch {
                logger.error("cannot watch a curl socket", metadata: ["fd": "\(fd)", "error": "\(error)"])
            }
        }
    }

    /// The loop reports `fd` ready.
    private func socketReady(_ fd: Int32, _ ready: IOEvents) {
        switch sockets.ready(fd) {
        case .unwatch(let id): loop.unwatch(id)
        case .tellCurl:
            var flags: Int32 = 0
            if ready.contains(.read) { flags |= CURL_CSELECT_IN }
            if ready.contains(.write) { flags |= CURL_CSELECT_OUT }
            if ready.contains(.error) { flags |= CURL_CSELECT_ERR }
            socketAction(fd, flags)
        }
    }

    /// curl opened a connection socket (its open-socket callback).
    func socketOpened(_ fd: Int32) {
        if let stale = sockets.opened(fd) { loop.unwatch(stale) }
    }

    /// curl is about to close `fd` (its close-socket callback): the watch ends before the number can be
    /// reused.
    func socketClosing(_ fd: Int32) {
        if let id = sockets.closing(fd) { loop.unwatch(id) }
    }

    /// curl's timer callback: its timeout is `ms` from now (-1: none).
    func timerChanged(_ ms: Int) {
        var action = curlTimer.curlAsked(ms: ms, now: monotonicNanos())
        if action == .queueJob {
            do {
                // Runs after the current callback and job, outside curl.
                try loop.execute { [self] in
                    if curlTimer.jobRan(now: monotonicNanos()) { socketAction(CURL_SOCKET_TIMEOUT, 0) }
                }
                return
            } catch {
                action = curlTimer.jobRefused()  // the loop is stopping: its timer takes over
            }
        }
        if case .arm(let due) = action { armTimer(due) }
    }

    private func armTimer(_ due: UInt64) {
        if let t = timer { loop.cancel(t) }
        let delay = due &- min(due, monotonicNanos())
        // 0 means "as soon as possible": a zero-delay timer runs on the next loop turn, outside curl's callback.
        timer = loop.schedule(after: .nanoseconds(Int64(delay))) { [self] in
            timer = nil
            switch curlTimer.timerFired(now: monotonicNanos()) {
            case .nothing: break
            case .arm(let due): armTimer(due)
            case .runCurl: socketAction(CURL_SOCKET_TIMEOUT, 0)
            }
        }
    }

    // MARK: loop thread

    private func socketAction(_ fd: Int32, _ flags: Int32) {
        guard let multi else { return }
        var running: Int32 = 0
        _ = curl_multi_socket_action(multi, fd, flags, &running)
        collectFinished()
    }

    private func collectFinished() {
        guard let multi else { return }
        var left: Int32 = 0
        while let msg = curl_multi_info_read(multi, &left) {
            guard ccurl_msg_is_done(msg) != 0, let easy = ccurl_msg_easy(msg) else { continue }
            let code = ccurl_msg_result(msg)
            guard let t = active.removeValue(forKey: easy) else { continue }
            _ = curl_multi_remove_handle(multi, easy)
            let outcome = finish(t, easy: easy, code: code)
            recycle(easy)
            t.promise.complete(outcome)
        }
    }

    /// Puts an easy handle back for reuse. Its options stay set: the per-client ones never change, and
    /// `configure` sets the per-request ones that differ from what `setups` remembers for the handle.
    private func recycle(_ easy: UnsafeMutableRawPointer) {
        if freeHandles.count < 256 {
            freeHandles.append(easy)
        } else {
            setups.removeValue(forKey: easy)
            curl_easy_cleanup(easy)
        }
    }

    /// Options that are the same for every request of this client: set once per easy handle.
    private func configureOnce(_ easy: UnsafeMutableRawPointer) {
        let c = configuration
        _ = ccurl_easy_setopt_data_callback(easy, CURLOPT_WRITEFUNCTION, curlWriteCallback)
        _ = ccurl_easy_setopt_data_callback(easy, CURLOPT_HEADERFUNCTION, curlHeaderCallback)
        _ = ccurl_easy_setopt_opensocket_callback(easy, curlOpenSocketCallback)
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_OPENSOCKETDATA, me)
        _ = ccurl_easy_setopt_closesocket_callback(easy, curlCloseSocketCallback)
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_CLOSESOCKETDATA, me)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        // Each easy handle keeps a receive buffer for as long as it lives (in flight or pooled): 8 KB,
        // half of curl's default, keeps many handles' buffers in the CPU's cache and their memory low
        // (BENCHMARKS.md has the measurements behind the size).
        _ = ccurl_easy_setopt_long(easy, CURLOPT_BUFFERSIZE, 8192)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_PROTOCOLS, Int(CURLPROTO_HTTP | CURLPROTO_HTTPS))
        _ = ccurl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, CurlRequestPlan.milliseconds(c.connectTimeout))
        _ = ccurl_easy_setopt_off(easy, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(c.maxBodyBytes))
        _ = ccurl_easy_setopt_long(easy, CURLOPT_FOLLOWLOCATION, c.followRedirects ? 1 : 0)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_MAXREDIRS, c.maxRedirects)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYPEER, c.verifyTLS ? 1 : 0)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYHOST, c.verifyTLS ? 2 : 0)
        if let ca = c.caFile { _ = ccurl_easy_setopt_string(easy, CURLOPT_CAINFO, ca) }
        _ = ccurl_easy_setopt_long(easy, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_2TLS))
        _ = ccurl_easy_setopt_string(easy, CURLOPT_USERAGENT, c.userAgent)
        if !CurlMulti.environmentNamesAProxy {
            _ = ccurl_easy_setopt_string(easy, CURLOPT_PROXY, "")
            _ = ccurl_easy_setopt_string(easy, CURLOPT_NOPROXY, "")
        }
    }

    /// The header list of requests that add no headers of their own: built once, owned by this
    /// object, freed in `close()`.
    private lazy var sharedHeaderList: UnsafeMutablePointer<curl_slist>? =
        CurlMulti.headerList(CurlRequestPlan.sharedHeaderLines(configuration.defaultHeaders))

    /// A curl header list of `lines`; the caller owns it.
    private static func headerList(_ lines: [String]) -> UnsafeMutablePointer<curl_slist>? {
        var list: UnsafeMutablePointer<curl_slist>?
        for line in lines { list = curl_slist_append(list, line) }
        return list
    }

    /// Hands a transfer to the loop (any thread).
    func enqueueStart(_ t: Transfer) {
        if loop.inEventLoop {
            start(t)
            return
        }
        enqueue { $0.starts.append(t) }
    }

    /// Asks the loop to abandon a transfer whose task was cancelled (any thread).
    func enqueueCancel(_ t: Transfer) {
        if loop.inEventLoop {
            abandon(t)
            return
        }
        enqueue { $0.cancels.append(t) }
    }

    /// Queues work for the loop; the first addition since the last drain schedules the drain job.
    private func enqueue(_ add: (inout Incoming) -> Void) {
        let schedule = incoming.locked { s -> Bool in
            add(&s)
            if s.drainQueued { return false }
            s.drainQueued = true
            return true
        }
        guard schedule else { return }
        do {
            try loop.execute { [self] in drainIncoming() }
        } catch {
            // The loop is gone: nothing queued will run. Fail the transfers waiting to start (a
            // cancelled one has already been resumed; no easy handle was ever given to them).
            let stranded = incoming.locked { s -> [Transfer] in
                s.drainQueued = false
                s.cancels.removeAll()
                defer { s.starts.removeAll() }
                return s.starts
            }
            for t in stranded { t.promise.fail(UpstreamError.clientShutDown) }
        }
    }

    /// Starts what other threads queued, then abandons what they cancelled (loop thread).
    private func drainIncoming() {
        incoming.locked { s in
            swap(&s.starts, &spareStarts)
            swap(&s.cancels, &spareCancels)
            s.drainQueued = false
        }
        for t in spareStarts { start(t) }
        for t in spareCancels { abandon(t) }
        spareStarts.removeAll(keepingCapacity: true)
        spareCancels.removeAll(keepingCapacity: true)
    }

    /// Starts a transfer (loop thread).
    private func start(_ t: Transfer) {
        let promise: LoopPromise<Void> = t.promise
        if promise.isCompleted { return }  // cancelled before it got here
        let request = t.request
        guard let multi = ensureMulti() else {
            promise.fail(UpstreamError.clientShutDown)
            return
        }
        let easy: UnsafeMutableRawPointer
        if let e = freeHandles.popLast() {
            easy = e
        } else if let e = curl_easy_init() {
            easy = e
            handlesCreated += 1
            configureOnce(e)
        } else {
            promise.fail(UpstreamError.transferFailed(url: request.url, code: -1, reason: "curl_easy_init failed"))
            return
        }
        t.easy = easy
        configure(easy, t)
        active[easy] = t
        let rc = curl_multi_add_handle(multi, easy)
        if rc != CURLM_OK {
            active.removeValue(forKey: easy)
            recycle(easy)
            promise.fail(UpstreamError.transferFailed(url: request.url, code: Int(rc.rawValue), reason: String(cString: curl_multi_strerror(rc))))
            return
        }
        promise.onCancel(t)
    }

    /// Removes a transfer whose task was cancelled: its easy handle leaves the multi at once.
    private func abandon(_ t: Transfer) {
        guard let multi, let easy = t.easy, active[easy] === t else { return }
        active.removeValue(forKey: easy)
        _ = curl_multi_remove_handle(multi, easy)
        recycle(easy)
    }

    /// Sets the options that can differ between requests, as ``CurlRequestPlan`` decides. A GET
    /// without a body and without headers of its own, like the previous request on this handle, only
    /// needs its per-transfer pointers.
    private func configure(_ easy: UnsafeMutableRawPointer, _ t: Transfer) {
        let r = t.request
        let ptr = Unmanaged.passUnretained(t).toOpaque()
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_PRIVATE, ptr)
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_WRITEDATA, ptr)
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_HEADERDATA, ptr)
        let plan = CurlRequestPlan(r, defaultHeaders: configuration.defaultHeaders, defaultTimeout: configuration.requestTimeout)
        let previous = setups[easy]
        if plan.reuses(previous) { return }
        if previous?.url != plan.setup.url { _ = ccurl_easy_setopt_string(easy, CURLOPT_URL, r.url) }
        if previous?.timeoutMs != plan.setup.timeoutMs { _ = ccurl_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, plan.setup.timeoutMs) }
        if let lines = plan.headerLines {
            let list = CurlMulti.headerList(lines)
            t.headerList = list
            _ = ccurl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, list)
        } else {
            _ = ccurl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, sharedHeaderList)
        }
        _ = ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, nil)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_NOBODY, 0)
        switch plan.method {
        case .head:
            _ = ccurl_easy_setopt_long(easy, CURLOPT_NOBODY, 1)
        case .withoutBody(let custom):
            _ = ccurl_easy_setopt_long(easy, CURLOPT_HTTPGET, 1)
            if let custom { _ = ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, custom) }
        case .withBody(let custom):
            if let custom { _ = ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, custom) }
            let body = r.body ?? []
            _ = ccurl_easy_setopt_long(easy, CURLOPT_POST, 1)
            _ = ccurl_easy_setopt_off(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
            body.withUnsafeBufferPointer { b in
                _ = ccurl_easy_setopt_pointer(easy, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: b.baseAddress ?? UnsafePointer(bitPattern: 1)))
            }
        }
        setups[easy] = plan.remembered
    }

    /// Records the response in `t` (status, timings, final URL), or maps curl's error.
    private func finish(_ t: Transfer, easy: UnsafeMutableRawPointer, code: CURLcode) -> Result<Void, any Error> {
        let url = t.request.url
        if code == CURLE_OK {
            var status = 0
            _ = ccurl_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
            if let unusable = UpstreamError.unusableStatus(status, url: url) { return .failure(unusable) }
            var total: curl_off_t = 0
            var connect: curl_off_t = 0
            var first: curl_off_t = 0
            var dns: curl_off_t = 0
            var tls: curl_off_t = 0
            _ = ccurl_easy_getinfo_off(easy, CURLINFO_NAMELOOKUP_TIME_T, &dns)
            _ = ccurl_easy_getinfo_off(easy, CURLINFO_APPCONNECT_TIME_T, &tls)
            _ = ccurl_easy_getinfo_off(easy, CURLINFO_TOTAL_TIME_T, &total)
            _ = ccurl_easy_getinfo_off(easy, CURLINFO_CONNECT_TIME_T, &connect)
            _ = ccurl_easy_getinfo_off(easy, CURLINFO_STARTTRANSFER_TIME_T, &first)
            if configuration.followRedirects {
                var effective: UnsafeMutableRawPointer?
                _ = ccurl_easy_getinfo_pointer(easy, CURLINFO_EFFECTIVE_URL, &effective)
                if let effective { t.finalURL = String(cString: effective.assumingMemoryBound(to: CChar.self)) }
            }
            t.status = status
            t.timings = .init(nameLookup: .microseconds(dns), connect: .microseconds(connect), tlsHandshake: .microseconds(tls),
                              firstByte: .microseconds(first), total: .microseconds(total))
            return .success(())
        }
        return .failure(UpstreamError(curl: code, url: url, maxBody: t.maxBody, refusedBody: t.tooLarge))
    }

    /// Counts for tests and leak checks: transfers in flight, idle easy handles, handles ever created.
    func counts() -> (active: Int, idle: Int, created: Int) { (active.count, freeHandles.count, handlesCreated) }

    /// Fails what is in flight, removes every handle and frees the multi handle (loop thread).
    func close() {
        closed = true
        if let id = hookID {
            loop.removeShutdownHook(id)
            hookID = nil
        }
        guard let multi else { return }
        for (easy, t) in active {
            _ = curl_multi_remove_handle(multi, easy)
            t.promise.fail(UpstreamError.clientShutDown)
            curl_easy_cleanup(easy)
        }
        active.removeAll()
        for easy in freeHandles { curl_easy_cleanup(easy) }
        freeHandles.removeAll()
        setups.removeAll()
        curl_slist_free_all(sharedHeaderList)
        sharedHeaderList = nil
        for id in sockets.removeAll() { loop.unwatch(id) }
        if let t = timer { loop.cancel(t); timer = nil }
        curlTimer.cancelled()
        curl_multi_cleanup(multi)
        self.multi = nil
    }
}
