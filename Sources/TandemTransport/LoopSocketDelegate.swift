import TandemCache

/// What a ``LoopSocket`` tells its owner. Every call comes on the loop thread.
package protocol LoopSocketDelegate: AnyObject {
    /// The connection is up; what was written while it connected goes out next.
    func socketConnected()
    /// Bytes arrived (once per read; ``socketReadDone()`` follows the reads of one readiness).
    func socketReceived(_ bytes: UnsafeRawBufferPointer)
    /// The reads of one readiness are done: parse what arrived.
    func socketReadDone()
    /// The connection failed, the server closed it, or the connect did not finish in time; the socket
    /// is already closed. `connecting`: it never got up. Not called after ``LoopSocket/close()``.
    func socketFailed(_ error: CacheError, connecting: Bool)
}
