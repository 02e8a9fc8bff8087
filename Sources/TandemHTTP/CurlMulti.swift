import CCurl
import CCurlShim
import Foundation
import HTTPTypes
import Logging
import Synchronization
import TandemLoop

/// One request in flight. The caller creates it (with its buffers), the loop fills it, and the caller
/// gets it back through `promise` and builds the response from it: what the loop writes lives in
/// memory the caller's thread allocated and frees, so the two threads do not pass malloc's chunks
/// back and forth (which made them contend on the allocator's locks).
final class Transfer: @unchecked Sendable, LoopPromiseCanceller {
    // Why @unchecked Sendable is safe: the caller sets `request`, `maxBody` and the empty buffers before
    // handing the transfer to the loop; from then on only the loop thread touches the mutable fields
    // (curl calls the callbacks from `curl_multi_socket_action`, which only the loop calls), until it
    // completes `promise`. The caller reads them only after that completion (the promise's lock orders
    // the accesses), and never after a cancellation, when the loop may still be writing.
    let request: UpstreamRequest
    let maxBody: Int
    let multi: CurlMulti
    /// Completed by the loop when the fields below hold the response, or with an error. (It holds no
    /// reference back to the transfer, so the two never keep each other alive.)
    var promise: LoopPromise<Void>!
    var easy: UnsafeMutableRawPointer?
    /// The request's header list: owned here, freed in `deinit`.
    var headerList: UnsafeMutablePointer<curl_slist>?
    var body: [UInt8] = []
    /// The header lines of the last response, as received (parsed later, off the loop thread).
    var rawHeaders: [UInt8] = []
    var tooLarge = false
    var status = 0
    var timings = UpstreamResponse.Timings(connect: .zero, firstByte: .zero, total: .zero)
    var finalURL: String

    init(request: UpstreamRequest, maxBody: Int, multi: CurlMulti) {
        self.request = request
        self.maxBody = maxBody
        self.multi = multi
        finalURL = request.url
        // Room for a typical small answer, allocated here on the caller's thread (no body for HEAD).
        rawHeaders.reserveCapacity(512)
        if request.method != .head { body.reserveCapacity(min(maxBody, 1024)) }
    }

    deinit { curl_slist_free_all(headerList) }

    /// The waiting task was cancelled (any thread): the loop removes the easy handle.
    func promiseCancelled() { multi.enqueueCancel(self) }

    /// The response (the caller's thread, after `promise` succeeded).
    func response() -> UpstreamResponse {
        // Taking the promise's lock orders these reads after the loop's writes in a way
        // ThreadSanitizer can see: a continuation resumed before its task finished suspending hands
        // over through the concurrency runtime's own atomics, which the sanitizer does not follow.
        _ = promise.isCompleted
        return UpstreamResponse(status: HTTPResponse.Status(code: status), rawHeaders: rawHeaders, body: body, timings: timings, url: finalURL)
    }
}

private let writeCallback: ccurl_data_callback = { data, size, count, user in
    guard let user else { return 0 }
    let t = Unmanaged<Transfer>.fromOpaque(user).takeUnretainedValue()
    let n = size * count
    if t.body.count + n > t.maxBody {
        t.tooLarge = true
        return 0  // aborts the transfer with CURLE_WRITE_ERROR
    }
    if t.body.isEmpty, let easy = t.easy {
        // The first bytes of the body: make room for all that the answer announced (libcurl's parse
        // of its Content-Length; -1 when none), so that a large body is not copied at every doubling
        // of the buffer. At most 1 MB ahead of the bytes: a server that announces more than it sends
        // makes the client allocate no more than that.
        var announced: curl_off_t = -1
        if ccurl_easy_getinfo_off(easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced) == CURLE_OK,
           announced > t.body.capacity, announced <= t.maxBody {
            t.body.reserveCapacity(Int(min(announced, 1 << 20)))
        }
    }
    if let data { t.body.append(contentsOf: UnsafeRawBufferPointer(start: data, count: n)) }
    return n
}

private let headerCallback: ccurl_data_callback = { data, size, count, user in
    let n = size * count
    guard let user, let data else { return n }
    let t = Unmanaged<Transfer>.fromOpaque(user).takeUnretainedValue()
    // Only copied here: the loop thread is the busy one; the caller parses (UpstreamResponse.headers).
    let line = UnsafeRawBufferPointer(start: data, count: n)
    if n >= 5, line[0] == UInt8(ascii: "H"), line[1] == UInt8(ascii: "T"), line[2] == UInt8(ascii: "T"),
       line[3] == UInt8(ascii: "P"), line[4] == UInt8(ascii: "/") {
        t.rawHeaders.removeAll(keepingCapacity: true)  // a new response (after a redirect or 100-continue)
    }
    t.rawHeaders.append(contentsOf: line)
    return n
}

private let openSocketCallback: ccurl_opensocket_callback = { user, _, address in
    guard let address else { return CURL_SOCKET_BAD }
    let fd = ccurl_open_socket(address)
    if fd >= 0, let user { Unmanaged<CurlMulti>.fromOpaque(user).takeUnretainedValue().socketOpened(fd) }
    return fd
}

private let closeSocketCallback: ccurl_closesocket_callback = { user, fd in
    if let user { Unmanaged<CurlMulti>.fromOpaque(user).takeUnretainedValue().socketClosing(fd) }
    return close(fd)
}

private let socketCallback: ccurl_socket_callback = { _, fd, what, user, socketp in
    guard let user else { return 0 }
    Unmanaged<CurlMulti>.fromOpaque(user).takeUnretainedValue().socketChanged(fd, what)
    return 0
}

private let timerCallback: ccurl_timer_callback = { _, ms, user in
    guard let user else { return 0 }
    Unmanaged<CurlMulti>.fromOpaque(user).takeUnretainedValue().timerChanged(ms)
    return 0
}

/// libcurl's multi-socket interface driven by an event loop. Every curl call happens on the loop
/// thread; curl's socket and timer callbacks only register loop watches and timers (curl is never
/// called from inside its own callbacks).
final class CurlMulti: @unchecked Sendable {
    // Why @unchecked Sendable is safe: all mutable state is touched only on `loop`'s thread; the
    // public entry points hop there first (`withLoopPromise`, `execute`).
    let loop: any TandemEventLoop
    let configuration: UpstreamClientConfiguration
    private var multi: UnsafeMutableRawPointer?
    private struct SocketWatch {
        var id: WatchID
        var events: IOEvents
        var parked: Bool
    }
    private var watches: [Int32: SocketWatch] = [:]
    /// Connection sockets curl opened through the open-socket callback and has not closed yet. Other
    /// descriptors curl reports (its resolver's wake-up pipe, say) are closed without the close-socket
    /// callback, so their watches end at CURL_POLL_REMOVE instead of being parked.
    private var connectionSockets: Set<Int32> = []
    private var timer: TimerID?
    private var active: [UnsafeMutableRawPointer: Transfer] = [:]
    private var freeHandles: [UnsafeMutableRawPointer] = []
    /// What each easy handle was last configured with, so that a reused handle only gets the options
    /// that differ (most requests of a client repeat the previous ones).
    private struct HandleSetup: Equatable {
        var url: String
        var timeoutMs: Int
        var method: HTTPRequest.Method
    }
    private var setups: [UnsafeMutableRawPointer: HandleSetup] = [:]
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
        _ = ccurl_multi_setopt_socket_callback(m, socketCallback)
        _ = ccurl_multi_setopt_pointer(m, CURLMOPT_SOCKETDATA, me)
        _ = ccurl_multi_setopt_timer_callback(m, timerCallback)
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

    /// Watches follow curl's connection sockets for their whole life: CURL_POLL_REMOVE only parks a
    /// watch (a kept-alive connection is usually re-added by the next request, costing no system call),
    /// and the close-socket callback ends it. A parked watch that fires (the peer closed an idle
    /// connection) is dropped, so it cannot spin. Any other descriptor is unwatched at CURL_POLL_REMOVE.
    func socketChanged(_ fd: Int32, _ what: Int32) {
        var events: IOEvents = []
        switch what {
        case CURL_POLL_IN: events = .read
        case CURL_POLL_OUT: events = .write
        case CURL_POLL_INOUT: events = [.read, .write]
        default:
            // CURL_POLL_REMOVE: park. Only a write interest must go (an idle socket is always writable).
            guard connectionSockets.contains(fd) else {
                if let w = watches.removeValue(forKey: fd) { loop.unwatch(w.id) }
                return
            }
            if var w = watches[fd] {
                w.parked = true
                if w.events.contains(.write) {
                    loop.updateWatch(w.id, events: .read)
                    w.events = .read
                }
                watches[fd] = w
            }
            return
        }
        if var w = watches[fd] {
            if w.events != events { loop.updateWatch(w.id, events: events) }
            w.events = events
            w.parked = false
            watches[fd] = w
            return
        }
        do {
            let id = try loop.watch(fd, events: events) { [self] ready in
                if let w = watches[fd], w.parked {
                    // curl does not care about this socket right now (an idle kept-alive connection
                    // the peer closed, say): stop watching; curl notices when it next uses it.
                    loop.unwatch(w.id)
                    watches.removeValue(forKey: fd)
                    return
                }
                var flags: Int32 = 0
                if ready.contains(.read) { flags |= CURL_CSELECT_IN }
                if ready.contains(.write) { flags |= CURL_CSELECT_OUT }
                if ready.contains(.error) { flags |= CURL_CSELECT_ERR }
                socketAction(fd, flags)
            }
            watches[fd] = SocketWatch(id: id, events: events, parked: false)
        } catch {
            logger.error("cannot watch a curl socket", metadata: ["fd": "\(fd)", "error": "\(error)"])
        }
    }

    /// curl opened a connection socket (its open-socket callback). A watch still held for this number
    /// belonged to a descriptor that was closed behind our back: it ends here.
    func socketOpened(_ fd: Int32) {
        if let w = watches.removeValue(forKey: fd) { loop.unwatch(w.id) }
        connectionSockets.insert(fd)
    }

    /// curl is about to close `fd` (its close-socket callback): the watch ends here, before the number
    /// can be reused.
    func socketClosing(_ fd: Int32) {
        connectionSockets.remove(fd)
        if let w = watches.removeValue(forKey: fd) { loop.unwatch(w.id) }
    }

    /// When curl wants its timeout handled (monotonic nanoseconds), and when the loop timer is set to fire.
    private var curlDeadline: UInt64?
    private var timerFires: UInt64 = 0

    /// A job that runs curl's due timeout later in this loop turn is queued.
    private var immediatePending = false

    /// curl's timer callback: one deadline, replaced by each call (-1: none). curl moves it several
    /// times per request, mostly later; the loop timer is only rescheduled when the deadline moves
    /// earlier, and a timer that fires before a deadline that moved later just re-arms itself.
    /// 0 ("as soon as possible", which every new transfer asks for) needs no timer: one job queued on
    /// the loop serves every transfer added in the same turn.
    func timerChanged(_ ms: Int) {
        guard ms >= 0 else {
            curlDeadline = nil
            return
        }
        let deadline = monotonicNanos() &+ UInt64(ms) &* 1_000_000
        curlDeadline = deadline
        if ms == 0 {
            if immediatePending { return }
            immediatePending = true
            do {
                // Runs after the current callback and job, outside curl.
                try loop.execute { [self] in
                    immediatePending = false
                    guard let due = curlDeadline, due <= monotonicNanos() else { return }
                    curlDeadline = nil
                    socketAction(CURL_SOCKET_TIMEOUT, 0)
                }
                return
            } catch {
                immediatePending = false  // the loop is stopping: fall back to its timer
            }
        }
        if timer != nil && timerFires <= deadline { return }
        armTimer(deadline)
    }

    private func armTimer(_ deadline: UInt64) {
        if let t = timer { loop.cancel(t) }
        timerFires = deadline
        let delay = deadline &- min(deadline, monotonicNanos())
        // 0 means "as soon as possible": a zero-delay timer runs on the next loop turn, outside curl's callback.
        timer = loop.schedule(after: .nanoseconds(Int64(delay))) { [self] in
            timer = nil
            guard let due = curlDeadline else { return }
            if due > monotonicNanos() {
                armTimer(due)
                return
            }
            curlDeadline = nil
            socketAction(CURL_SOCKET_TIMEOUT, 0)
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
        _ = ccurl_easy_setopt_data_callback(easy, CURLOPT_WRITEFUNCTION, writeCallback)
        _ = ccurl_easy_setopt_data_callback(easy, CURLOPT_HEADERFUNCTION, headerCallback)
        _ = ccurl_easy_setopt_opensocket_callback(easy, openSocketCallback)
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_OPENSOCKETDATA, me)
        _ = ccurl_easy_setopt_closesocket_callback(easy, closeSocketCallback)
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_CLOSESOCKETDATA, me)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        // Each easy handle keeps a receive buffer for as long as it lives (in flight or pooled): 8 KB,
        // half of curl's default, keeps many handles' buffers in the CPU's cache and their memory low
        // (BENCHMARKS.md has the measurements behind the size).
        _ = ccurl_easy_setopt_long(easy, CURLOPT_BUFFERSIZE, 8192)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_PROTOCOLS, Int(CURLPROTO_HTTP | CURLPROTO_HTTPS))
        _ = ccurl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, milliseconds(c.connectTimeout))
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
    private lazy var sharedHeaderList: UnsafeMutablePointer<curl_slist>? = {
        var list: UnsafeMutablePointer<curl_slist>?
        for field in configuration.defaultHeaders { list = curl_slist_append(list, CurlMulti.headerLine(field)) }
        return curl_slist_append(list, "Expect:")  // no 100-continue round trip for bodies
    }()

    /// A field as curl takes it: `Name: value`, or `Name;` for an empty value (`Name:` would remove it).
    static func headerLine(_ field: HTTPField) -> String {
        field.value.isEmpty ? "\(field.name.rawName);" : "\(field.name.rawName): \(field.value)"
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

    /// Sets the options that can differ between requests. A GET without a body and without headers of
    /// its own, like the previous request on this handle, only needs its per-transfer pointers.
    private func configure(_ easy: UnsafeMutableRawPointer, _ t: Transfer) {
        let r = t.request
        let ptr = Unmanaged.passUnretained(t).toOpaque()
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_PRIVATE, ptr)
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_WRITEDATA, ptr)
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_HEADERDATA, ptr)
        let setup = HandleSetup(url: r.url, timeoutMs: milliseconds(r.timeout ?? configuration.requestTimeout), method: r.method)
        let simple = r.headers.isEmpty && r.body == nil && (r.method == .get || r.method == .head)
        let previous = setups[easy]
        if simple, previous == setup { return }
        if previous?.url != setup.url { _ = ccurl_easy_setopt_string(easy, CURLOPT_URL, r.url) }
        if previous?.timeoutMs != setup.timeoutMs { _ = ccurl_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, setup.timeoutMs) }
        // Only a request with a body (or a method that defines one: POST, PUT, PATCH, which then say
        // Content-Length: 0) sends body headers, and never a content type it did not ask for.
        let sendsBody = r.body != nil || r.method == .post || r.method == .put || r.method == .patch
        if r.headers.isEmpty && !sendsBody {
            _ = ccurl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, sharedHeaderList)
        } else {
            var list: UnsafeMutablePointer<curl_slist>?
            for field in UpstreamRequest.merge(configuration.defaultHeaders, r.headers) {
                list = curl_slist_append(list, CurlMulti.headerLine(field))
            }
            let hasContentType = configuration.defaultHeaders.contains(.contentType) || r.headers.contains(.contentType)
            if sendsBody && !hasContentType { list = curl_slist_append(list, "Content-Type:") }
            list = curl_slist_append(list, "Expect:")
            t.headerList = list
            _ = ccurl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, list)
        }
        _ = ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, nil)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_NOBODY, 0)
        switch r.method {
        case .head:
            _ = ccurl_easy_setopt_long(easy, CURLOPT_NOBODY, 1)
        case _ where !sendsBody:
            // GET, DELETE, OPTIONS, ... without a body: no Content-Length, no Content-Type.
            _ = ccurl_easy_setopt_long(easy, CURLOPT_HTTPGET, 1)
            if r.method != .get { _ = ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, r.method.rawValue) }
        default:
            if r.method != .post { _ = ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, r.method.rawValue) }
            let body = r.body ?? []
            _ = ccurl_easy_setopt_long(easy, CURLOPT_POST, 1)
            _ = ccurl_easy_setopt_off(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
            body.withUnsafeBufferPointer { b in
                _ = ccurl_easy_setopt_pointer(easy, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: b.baseAddress ?? UnsafePointer(bitPattern: 1)))
            }
        }
        // Only a plain request leaves the handle in a state the next plain request can reuse as is.
        if simple { setups[easy] = setup } else { setups.removeValue(forKey: easy) }
    }

    private func milliseconds(_ d: Duration) -> Int {
        let c = d.components
        return max(1, Int(c.seconds) * 1000 + Int(c.attoseconds / 1_000_000_000_000_000))
    }

    /// Records the response in `t` (status, timings, final URL), or maps curl's error.
    private func finish(_ t: Transfer, easy: UnsafeMutableRawPointer, code: CURLcode) -> Result<Void, any Error> {
        let url = t.request.url
        if code == CURLE_OK {
            var status = 0
            _ = ccurl_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
            // curl reads three digits; anything else is not a status swift-http-types can hold.
            guard (100...999).contains(status) else {
                return .failure(UpstreamError.invalidResponse(url: url, reason: "status code \(status)"))
            }
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
        let reason = String(cString: curl_easy_strerror(code))
        let error: UpstreamError
        switch code {
        case CURLE_WRITE_ERROR where t.tooLarge, CURLE_FILESIZE_EXCEEDED:
            error = .bodyTooLarge(url: url, limit: t.maxBody)
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            error = .dnsFailed(url: url, reason: reason)
        case CURLE_COULDNT_CONNECT:
            error = .connectFailed(url: url, reason: reason)
        case CURLE_OPERATION_TIMEDOUT:
            error = .timeout(url: url)
        case CURLE_TOO_MANY_REDIRECTS:
            error = .tooManyRedirects(url: url)
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
             CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS:
            error = .tlsFailure(url: url, reason: reason)
        case CURLE_GOT_NOTHING, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_PARTIAL_FILE, CURLE_HTTP2, CURLE_HTTP2_STREAM:
            error = .upstreamClosed(url: url, reason: reason)
        case CURLE_WEIRD_SERVER_REPLY, CURLE_UNSUPPORTED_PROTOCOL:
            // The URL's scheme was checked before any I/O: an unsupported protocol now means the
            // answer (bytes that are not HTTP, read as HTTP/0.9) or a redirect target was refused.
            error = .invalidResponse(url: url, reason: reason)
        case CURLE_URL_MALFORMAT:
            error = .invalidURL(url: url, reason: reason)
        default:
            error = .transferFailed(url: url, code: Int(code.rawValue), reason: reason)
        }
        return .failure(error)
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
        for (_, w) in watches { loop.unwatch(w.id) }
        watches.removeAll()
        connectionSockets.removeAll()
        if let t = timer { loop.cancel(t); timer = nil }
        curl_multi_cleanup(multi)
        self.multi = nil
    }
}
