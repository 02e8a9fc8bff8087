import Dispatch
import TandemCache
import TandemLoop

#if canImport(Glibc)
import Glibc
#endif

/// One client connection's socket on an event loop, shared by the backends that speak their protocol
/// themselves (Redis through hiredis's reader, memcached's meta protocol): the connect (the host looked
/// up off the loop thread when it is a name, then every address tried in turn within the connect
/// timeout), the output buffer written when the socket can take it (everything written in one loop
/// turn goes out in one write), and the reads. The owner keeps its requests, replies and timeouts.
///
/// With a ``TLSClientContext`` the socket speaks TLS: the handshake runs on the loop after the TCP
/// connect, within the same connect timeout, and the delegate hears ``LoopSocketDelegate/socketConnected()``
/// only once it is done; reads and writes go through OpenSSL (WANT_READ / WANT_WRITE wait for the
/// socket's readiness like any other read or write).
package final class LoopSocket: @unchecked Sendable {
    // Why @unchecked Sendable is safe: every mutable field is only touched on `loop`'s thread; the
    // owner calls in from there, and the loop calls back there (watches, timers, and the lookup's
    // `execute`).

    package let loop: any TandemEventLoop
    package let address: ServerAddress
    /// Where to connect, looked up off the loop thread on every connect (a server Redis Sentinel
    /// names, say): the addresses, and the name TLS checks. Nil: `address`.
    private let lookup: (@Sendable () throws(CacheError) -> (addresses: [ResolvedAddress], tlsHost: String))?
    /// Names the server in errors.
    package let name: String
    /// "redis", "memcached": names the operation of a connect timeout.
    private let protocolName: String
    private let connectTimeout: UInt64
    /// The owner (which holds this socket).
    package weak var delegate: (any LoopSocketDelegate)?

    private var fd: Int32 = -1
    private var watchID: WatchID?
    private var interest: IOEvents = []
    private var connecting = false
    private var connected = false
    private var out: [UInt8] = []
    private var outSent = 0
    private var flushScheduled = false
    private var addresses: [ResolvedAddress] = []
    private var addressIndex = 0
    /// Counts connects, so that a name lookup that finishes after its attempt ended is ignored.
    private var attempt: UInt64 = 0
    private var connectTimer: TimerID?
    private var readBuffer = [UInt8](repeating: 0, count: 65536)
    /// TLS: the context new sessions come from, the host name they check, and the session of the
    /// current connection (from the TCP connect until close).
    private let tls: TLSClientContext?
    private var tlsHost: String
    private var session: TLSSession?
    /// The TLS handshake is under way (the TCP connect is done; `connecting` is still true).
    private var handshaking = false
    /// OpenSSL asked to wait for writability in a read, or a write could not finish.
    private var tlsWantsWrite = false

    /// - Parameters:
    ///   - tls: speak TLS on the connection (nil: plain TCP or a Unix socket).
    ///   - tlsHost: the name sent as SNI and checked against the server's certificate.
    package init(loop: any TandemEventLoop, address: ServerAddress, name: String, protocolName: String, connectTimeout: Double,
                 tls: TLSClientContext? = nil, tlsHost: String = "") {
        self.loop = loop
        self.address = address
        self.name = name
        self.protocolName = protocolName
        self.connectTimeout = UInt64(connectTimeout * 1e9)
        self.tls = tls
        self.tlsHost = tlsHost
        lookup = nil
    }

    /// A socket whose server is looked up anew on every connect, off the loop thread (`lookup` may
    /// block: it asks other servers). `name` names it in errors.
    package init(loop: any TandemEventLoop, name: String, protocolName: String, connectTimeout: Double, tls: TLSClientContext? = nil,
                 lookup: @escaping @Sendable () throws(CacheError) -> (addresses: [ResolvedAddress], tlsHost: String)) {
        self.loop = loop
        address = .unix(path: "")
        self.name = name
        self.protocolName = protocolName
        self.connectTimeout = UInt64(connectTimeout * 1e9)
        self.tls = tls
        tlsHost = ""
        self.lookup = lookup
    }

    deinit {
        session = nil  // frees the TLS session before its socket is closed
        if fd >= 0 { Glibc.close(fd) }
    }

    /// True while connecting or connected.
    package var isOpen: Bool { connecting || connected }
    /// True once connected (and until closed or failed).
    package var isConnected: Bool { connected }

    /// Starts connecting. A failure is reported to the delegate, possibly before this returns.
    package func connect() {
        close()
        attempt &+= 1
        connecting = true
        connectTimer = loop.schedule(after: .nanoseconds(Int64(connectTimeout))) { [self] in
            connectTimer = nil
            if handshaking {
                fail(.tls(server: name, failure: .unanswered), connecting: true)
            } else if connecting {
                fail(.timeout(operation: "\(protocolName) connect", server: name), connecting: true)
            }
        }
        if lookup == nil {
            let direct: [ResolvedAddress]?
            do {
                direct = try address.addressesWithoutLookup(description: name)
            } catch {
                fail(error, connecting: true)
                return
            }
            if let direct {
                tryAddresses(direct, from: 0, lastFailure: nil)
                return
            }
        }
        // A host name, or a server to ask for: look it up on another thread (getaddrinfo and the
        // question block) and come back to the loop.
        let mine = attempt
        let target = address
        let description = name
        let host = tlsHost
        let find: @Sendable () throws(CacheError) -> (addresses: [ResolvedAddress], tlsHost: String) = lookup ?? {
            () throws(CacheError) in (try target.resolveAll(description: description), host)
        }
        WorkerPool.lookups.submit { [self] in
            let result = Result { () throws(CacheError) in try find() }
            // If the loop is gone, its shutdown hooks have already failed everything pending.
            try? loop.execute { [self] in
                guard attempt == mine, connecting, fd < 0 else { return }
                switch result {
                case .success(let found):
                    tlsHost = found.tlsHost
                    tryAddresses(found.addresses, from: 0, lastFailure: nil)
                case .failure(let e): fail(e, connecting: true)
                }
            }
        }
    }

    /// Queues bytes; they go out at the end of this loop turn (or once connected).
    package func write(_ bytes: UnsafeRawBufferPointer) {
        out.append(contentsOf: bytes)
        if connected { scheduleFlush() }
    }

    /// Queues the bytes that `fill` appends to the outgoing buffer in place (no buffer of their own);
    /// they go out at the end of this loop turn (or once connected).
    package func write(_ fill: (inout [UInt8]) -> Void) {
        fill(&out)
        if connected { scheduleFlush() }
    }

    /// Queues bytes; they go out at the end of this loop turn (or once connected).
    package func write(_ bytes: [UInt8]) {
        out.append(contentsOf: bytes)
        if connected { scheduleFlush() }
    }

    /// Closes the socket and drops what was not sent; the delegate is not told.
    package func close() {
        if let w = watchID { loop.unwatch(w); watchID = nil }
        interest = []
        session = nil
        handshaking = false
        tlsWantsWrite = false
        if fd >= 0 { Glibc.close(fd); fd = -1 }
        if let t = connectTimer { loop.cancel(t); connectTimer = nil }
        connecting = false
        connected = false
        addresses = []
        out = []
        outSent = 0
    }

    private func fail(_ error: CacheError, connecting wasConnecting: Bool) {
        close()
        delegate?.socketFailed(error, connecting: wasConnecting)
    }

    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        do {
            // Runs after the rest of this turn's submissions: they all go out in one write.
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
        guard connected, fd >= 0 else { return }
        if let session {
            flushTLS(session)
            return
        }
        sending: while outSent < out.count {
            switch out.withUnsafeBytes({ SocketIO.send(fd, UnsafeRawBufferPointer(rebasing: $0[outSent...])) }) {
            case .bytes(let n): outSent += n
            case .wouldBlock: break sending
            case .closed:
                fail(.connectionFailed(server: name, reason: "the server closed the connection"), connecting: false)
                return
            case .failed(let e):
                fail(.connectionFailed(server: name, reason: "write failed: \(e)"), connecting: false)
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

    private func flushTLS(_ session: TLSSession) {
        tlsWantsWrite = false
        loop: while outSent < out.count {
            let r = out.withUnsafeBytes { raw in session.write(UnsafeRawBufferPointer(rebasing: raw[outSent...])) }
            switch r {
            case .bytes(let n): outSent += n
            case .wantWrite:
                tlsWantsWrite = true
                break loop
            case .wantRead:
                break loop  // goes on when the socket is readable (onEvent flushes what is left)
            case .closed:
                fail(.connectionFailed(server: name, reason: "the server closed the connection"), connecting: false)
                return
            case .failed(let f):
                fail(f.error(server: name), connecting: false)
                return
            }
        }
        if outSent == out.count {
            out.removeAll(keepingCapacity: out.count < 1 << 20)
            outSent = 0
        }
        setInterest(tlsWantsWrite ? [.read, .write] : .read)
    }

    /// Starts the TLS handshake on a connected socket.
    private func startTLS(_ context: TLSClientContext) {
        do {
            session = try TLSSession(context: context, fd: fd, host: tlsHost)
        } catch {
            fail(.tls(server: name, failure: .handshakeFailed(error.reason)), connecting: true)
            return
        }
        handshaking = true
        continueHandshake()
    }

    private func continueHandshake() {
        guard let session else { return }
        switch session.handshake() {
        case .success(.done):
            handshaking = false
            setInterest(.read)
            becomeConnected()
        case .success(.wantRead): setInterest(.read)
        case .success(.wantWrite): setInterest([.read, .write])
        case .failure(let f): fail(.tls(server: name, failure: f), connecting: true)
        }
    }

    /// Connects to `addrs[index...]`, the first that does not refuse at once; when none is left, the
    /// connect fails with the last reason.
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
                    fail(.connectionFailed(server: name, reason: "cannot watch the socket: \(error)"), connecting: true)
                    return
                }
                if !inProgress { tcpConnected() }
                return
            }
        }
        fail(.connectionFailed(server: name, reason: last ?? "no address"), connecting: true)
    }

    /// The TCP connect finished: start TLS, or tell the owner.
    private func tcpConnected() {
        if let tls { startTLS(tls) } else { becomeConnected() }
    }

    private func becomeConnected() {
        connecting = false
        connected = true
        addresses = []
        if let t = connectTimer { loop.cancel(t); connectTimer = nil }
        delegate?.socketConnected()
        if connected { flush() }
    }

    private func onEvent(_ ev: IOEvents) {
        if handshaking {
            continueHandshake()
            return
        }
        if connecting {
            guard fd >= 0 else { return }
            let err = ResolvedAddress.connectError(fd)
            if err != 0 {
                // This address refused: close its socket (nothing was sent on it) and try the next.
                if let w = watchID { loop.unwatch(w); watchID = nil }
                Glibc.close(fd)
                fd = -1
                tryAddresses(addresses, from: addressIndex + 1, lastFailure: "connect failed: \(Errno(err))")
                return
            }
            tcpConnected()
            return
        }
        guard connected else { return }
        if session != nil {
            // OpenSSL may need a write to read or a read to write: on any readiness, do both.
            readAvailableTLS()
            if connected, outSent < out.count || tlsWantsWrite { flush() }
            return
        }
        if ev.contains(.read) || ev.contains(.error) { readAvailable() }
        if ev.contains(.write), connected { flush() }
    }

    private func readAvailableTLS() {
        guard let session else { return }
        while connected {
            let r = readBuffer.withUnsafeMutableBytes { session.read(into: $0) }
            switch r {
            case .bytes(let n):
                readBuffer.withUnsafeBytes { delegate?.socketReceived(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            case .wantRead:
                delegate?.socketReadDone()
                return
            case .wantWrite:
                tlsWantsWrite = true
                setInterest([.read, .write])
                delegate?.socketReadDone()
                return
            case .closed:
                delegate?.socketReadDone()
                if connected { fail(.connectionFailed(server: name, reason: "the server closed the connection"), connecting: false) }
                return
            case .failed(let f):
                delegate?.socketReadDone()
                if connected { fail(f.error(server: name), connecting: false) }
                return
            }
        }
    }

    private func readAvailable() {
        reading: while true {
            switch readBuffer.withUnsafeMutableBytes({ SocketIO.receive(fd, into: $0) }) {
            case .bytes(let n):
                readBuffer.withUnsafeBytes { delegate?.socketReceived(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                guard connected else { return }  // the owner gave up on the connection
                if n < readBuffer.count { break reading }
            case .closed:
                delegate?.socketReadDone()
                if connected { fail(.connectionFailed(server: name, reason: "the server closed the connection"), connecting: false) }
                return
            case .wouldBlock:
                break reading
            case .failed(let e):
                fail(.connectionFailed(server: name, reason: "read failed: \(e)"), connecting: false)
                return
            }
        }
        delegate?.socketReadDone()
    }
}
