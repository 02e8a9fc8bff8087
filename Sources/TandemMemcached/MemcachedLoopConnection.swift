import Dispatch
import Logging
import TandemCache
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// One connection to one memcached server, driven by an event loop and speaking the meta protocol.
///
/// Requests submitted in one loop turn go out in one write; replies are matched in order. A request
/// may take several replies (a quiet batch ends with `MN`): its handler says when it is complete.
/// When the oldest request outlives the command timeout, or the connection breaks, everything in
/// flight on it fails with a typed error (``CacheError/timeout(operation:server:)`` or
/// ``CacheError/connectionFailed(server:reason:)``), the failure is reported (so that the server can
/// be set aside), and the next request reconnects, with a short backoff after failed attempts.
final class MemcachedLoopConnection: @unchecked Sendable {
    // Why @unchecked Sendable is safe: every mutable field below is only touched on `loop`'s thread;
    // `send` and `close` are documented as loop-thread only and callers hop there first
    // (``MemcachedLoopClient`` does, with `withLoopPromise` or `execute`).

    /// Called with a reply (or once with the failure that ended the request); returns true when the
    /// request has all its replies.
    typealias Handler = (Result<MetaReply, CacheError>) -> Bool

    let loop: any EventLoop
    let address: ServerAddress
    let name: String
    let commandTimeout: UInt64
    let connectTimeout: UInt64
    /// Called on the loop thread when the connection fails (not when it is closed on purpose).
    var onFailure: ((CacheError) -> Void)?
    private let logger = Logger(label: "tandem.memcached")

    private enum State {
        case idle
        case connecting
        case ready
        case backoff(until: UInt64, reason: String)
        case closed
    }
    private struct Pending {
        let deadline: UInt64
        let handler: Handler
    }

    private var state = State.idle
    private var fd: Int32 = -1
    private var watchID: WatchID?
    private var interest: IOEvents = []
    private var decoder = MetaDecoder()
    private var out: [UInt8] = []
    private var outSent = 0
    private var pending: [Pending] = []
    private var head = 0
    private var timeoutTimer: TimerID?
    private var connectTimer: TimerID?
    private var flushScheduled = false
    private var failures = 0
    private var addresses: [ResolvedAddress] = []
    private var addressIndex = 0
    private var attempt: UInt64 = 0
    private var hookID: ShutdownHookID?
    private var readBuffer = [UInt8](repeating: 0, count: 65536)

    init(loop: any EventLoop, address: ServerAddress, name: String, commandTimeout: Double, connectTimeout: Double) {
        self.loop = loop
        self.address = address
        self.name = name
        self.commandTimeout = UInt64(commandTimeout * 1e9)
        self.connectTimeout = UInt64(connectTimeout * 1e9)
    }

    deinit {
        if fd >= 0 { Glibc.close(fd) }
    }

    /// True while the connection is backing off after a failure.
    var isBackingOff: Bool {
        if case .backoff(let until, _) = state { return monotonicNanos() < until }
        return false
    }

    // MARK: loop thread

    /// Queues `request` (whole meta-protocol commands) with its reply handler. Loop thread only.
    func send(_ request: [UInt8], _ handler: @escaping Handler) {
        if hookID == nil, !isClosed {
            hookID = loop.onShutdown { [self] in loopShuttingDown() }
        }
        if case .backoff(let until, let reason) = state {
            if monotonicNanos() < until {
                _ = handler(.failure(.connectionFailed(server: name, reason: "reconnecting after: \(reason)")))
                return
            }
            state = .idle
        }
        if case .closed = state {
            _ = handler(.failure(.shutDown("the event loop of memcached \(name)")))
            return
        }
        if case .idle = state {
            startConnect()
            if case .backoff(_, let reason) = state {
                _ = handler(.failure(.connectionFailed(server: name, reason: reason)))
                return
            }
        }
        out.append(contentsOf: request)
        pending.append(Pending(deadline: monotonicNanos() &+ commandTimeout, handler: handler))
        armTimeout()
        if case .ready = state { scheduleFlush() }
    }

    /// Closes the connection: pending requests fail with a `connectionFailed` "closed" error and the
    /// next request reconnects. Loop thread only.
    func close() {
        drop(.connectionFailed(server: name, reason: "closed"), next: .idle, report: false)
        if let id = hookID {
            loop.removeShutdownHook(id)
            hookID = nil
        }
    }

    private var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        do {
            try loop.execute { self.flush() }
        } catch {
            flushScheduled = false
            flush()
        }
    }

    private func setInterest(_ events: IOEvents) {
        guard let watchID, events != interest else { return }
        interest = events
        loop.updateWatch(watchID, events: events)
    }

    private func flush() {
        flushScheduled = false
        guard case .ready = state, fd >= 0 else { return }
        while outSent < out.count {
            let n = out.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress! + outSent, raw.count - outSent, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                outSent += n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                break
            } else {
                drop(.connectionFailed(server: name, reason: "write failed: \(String(cString: strerror(errno)))"), next: .idle)
                return
            }
        }
        if outSent == out.count {
            out.removeAll(keepingCapacity: out.count < 1 << 20)
            outSent = 0
            setInterest(.read)
        } else {
            setInterest([.read, .write])
        }
    }

    private func startConnect() {
        attempt &+= 1
        state = .connecting
        decoder.reset()
        connectTimer = loop.schedule(after: .nanoseconds(Int64(connectTimeout))) { [self] in
            connectTimer = nil
            if case .connecting = state {
                drop(.timeout(operation: "memcached connect", server: name), next: .backoff)
            }
        }
        let direct: [ResolvedAddress]?
        do {
            direct = try address.addressesWithoutLookup(description: name)
        } catch {
            drop(error, next: .backoff)
            return
        }
        if let direct {
            tryAddresses(direct, from: 0, lastFailure: nil)
            return
        }
        let mine = attempt
        let target = address
        let description = name
        DispatchQueue.global().async { [self] in
            let result = Result { () throws(CacheError) in try target.resolveAll(description: description) }
            try? loop.execute { [self] in
                guard attempt == mine, case .connecting = state, fd < 0 else { return }
                switch result {
                case .success(let addrs): tryAddresses(addrs, from: 0, lastFailure: nil)
                case .failure(let e): drop(e, next: .backoff)
                }
            }
        }
    }

    private func tryAddresses(_ addrs: [ResolvedAddress], from index: Int, lastFailure: String?) {
        var i = index
        var last = lastFailure
        while i < addrs.count {
            switch addrs[i].startConnect() {
            case .failure(let f):
                last = f.reason
                i += 1
            case .success(let (s, inProgress)):
                fd = s
                addresses = addrs
                addressIndex = i
                do {
                    interest = [.read, .write]
                    watchID = try loop.watch(s, events: interest) { [self] ev in onEvent(ev) }
                } catch {
                    drop(.connectionFailed(server: name, reason: "cannot watch the socket: \(error)"), next: .backoff)
                    return
                }
                if !inProgress { connected() }
                return
            }
        }
        drop(.connectionFailed(server: name, reason: last ?? "no address"), next: .backoff)
    }

    private func connected() {
        state = .ready
        failures = 0
        addresses = []
        if let t = connectTimer { loop.cancel(t); connectTimer = nil }
        flush()
    }

    private func loopShuttingDown() {
        hookID = nil
        drop(.shutDown("the event loop of memcached \(name)"), next: .idle, report: false)
        state = .closed
    }

    private func onEvent(_ ev: IOEvents) {
        if case .connecting = state {
            let err = ResolvedAddress.connectError(fd)
            if err != 0 {
                if let w = watchID { loop.unwatch(w); watchID = nil }
                Glibc.close(fd)
                fd = -1
                tryAddresses(addresses, from: addressIndex + 1, lastFailure: "connect failed: \(String(cString: strerror(err)))")
                return
            }
            connected()
            return
        }
        guard case .ready = state else { return }
        if ev.contains(.read) || ev.contains(.error) { readAvailable() }
        if ev.contains(.write), case .ready = state { flush() }
    }

    private func readAvailable() {
        while true {
            let n = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                readBuffer.withUnsafeBytes { decoder.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                if n < readBuffer.count { break }
            } else if n == 0 {
                drainReplies()
                drop(.connectionFailed(server: name, reason: "the server closed the connection"), next: .idle)
                return
            } else if errno == EINTR {
                continue
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                break
            } else {
                drop(.connectionFailed(server: name, reason: "read failed: \(String(cString: strerror(errno)))"), next: .idle)
                return
            }
        }
        drainReplies()
    }

    private func drainReplies() {
        while case .ready = state {
            let reply: MetaReply?
            do {
                reply = try decoder.next()
            } catch {
                drop(.connectionFailed(server: name, reason: "protocol error: \(error.reason)"), next: .idle)
                return
            }
            guard let reply else { break }
            guard head < pending.count else {
                drop(.connectionFailed(server: name, reason: "a reply without a request"), next: .idle)
                return
            }
            if pending[head].handler(.success(reply)) { head += 1 }
        }
        if head == pending.count {
            pending.removeAll(keepingCapacity: pending.count < 4096)
            head = 0
        } else if head > 1024 && head * 2 > pending.count {
            pending.removeFirst(head)
            head = 0
        }
    }

    private func armTimeout() {
        guard timeoutTimer == nil, head < pending.count else { return }
        let delay = pending[head].deadline &- min(pending[head].deadline, monotonicNanos())
        timeoutTimer = loop.schedule(after: .nanoseconds(Int64(delay))) { [self] in
            timeoutTimer = nil
            expire()
        }
    }

    /// The oldest request is past its deadline: the server is stalled (or the reply is stuck half
    /// written), and everything behind it on this connection waits on it. Every request in flight
    /// fails with a timeout, the connection is dropped (the server is set aside, as libmemcached does
    /// after a timeout), and later requests reconnect.
    private func expire() {
        guard head < pending.count else { return }
        if pending[head].deadline <= monotonicNanos() {
            drop(.timeout(operation: "memcached command", server: name), next: .idle)
        } else {
            armTimeout()
        }
    }

    private enum Next { case idle, backoff }

    private func drop(_ error: CacheError, next: Next, report: Bool = true) {
        let wasConnecting: Bool
        if case .connecting = state { wasConnecting = true } else { wasConnecting = false }
        if let w = watchID { loop.unwatch(w); watchID = nil }
        interest = []
        if fd >= 0 { Glibc.close(fd); fd = -1 }
        decoder.reset()
        addresses = []
        let victims = pending[head...]
        pending = []
        head = 0
        out = []
        outSent = 0
        if let t = timeoutTimer { loop.cancel(t); timeoutTimer = nil }
        if let t = connectTimer { loop.cancel(t); connectTimer = nil }
        if next == .backoff || wasConnecting {
            failures += 1
            let ms = min(250, 25 << min(failures, 4))
            state = .backoff(until: monotonicNanos() &+ UInt64(ms) * 1_000_000, reason: "\(error)")
            logger.warning("memcached connection failed; backing off", metadata: ["server": "\(name)", "retry_ms": "\(ms)", "reason": "\(error)"])
        } else {
            state = .idle
        }
        for v in victims { _ = v.handler(.failure(error)) }
        if report { onFailure?(error) }
    }
}
