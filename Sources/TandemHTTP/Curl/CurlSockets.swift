import TandemLoop

/// The loop watches of curl's sockets, without the loop: a state machine that turns curl's socket
/// callbacks and the loop's readiness reports into the watches the client adds, changes and ends.
///
/// Watches follow curl's connection sockets for their whole life. CURL_POLL_REMOVE only parks a watch
/// (a kept-alive connection is usually wanted again by the next request, which then costs no system
/// call), and curl's close-socket callback ends it. A parked watch that fires (the peer closed an idle
/// connection) is ended, so that it cannot spin; curl notices when it next uses the connection. Any
/// other descriptor curl reports (its resolver's wake-up pipe, say) is closed without the close-socket
/// callback, so its watch ends at CURL_POLL_REMOVE.
package struct CurlSockets: Sendable {
    /// What curl wants to know about a socket (its CURL_POLL_* value).
    package enum Interest: Sendable {
        case read, write, readWrite, remove
    }

    /// What the client does after one of curl's socket callbacks.
    package enum Action: Equatable, Sendable {
        /// Nothing.
        case none
        /// Watch the socket for these events, then report the watch with ``watched(_:id:events:)``.
        case watch(IOEvents)
        /// Change what the watch waits for.
        case update(WatchID, IOEvents)
        /// End the watch.
        case unwatch(WatchID)
    }

    /// What the client does when the loop reports a socket ready.
    package enum Ready: Equatable, Sendable {
        /// Tell curl (curl_multi_socket_action with the ready events).
        case tellCurl
        /// curl is not using the socket now: end the watch.
        case unwatch(WatchID)
    }

    private struct Watch: Sendable {
        var id: WatchID
        var events: IOEvents
        var parked: Bool
    }

    private var watches: [Int32: Watch] = [:]
    /// Connection sockets curl opened through its open-socket callback and has not closed yet.
    private var connectionSockets: Set<Int32> = []

    /// No sockets.
    package init() {}

    /// The watches held.
    package var count: Int { watches.count }

    /// curl's socket callback: it wants `interest` on `fd`.
    package mutating func curlWants(_ interest: Interest, fd: Int32) -> Action {
        let events: IOEvents
        switch interest {
        case .read: events = .read
        case .write: events = .write
        case .readWrite: events = [.read, .write]
        case .remove:
            guard connectionSockets.contains(fd) else {
                return watches.removeValue(forKey: fd).map { .unwatch($0.id) } ?? .none
            }
            guard var w = watches[fd] else { return .none }
            w.parked = true
            defer { watches[fd] = w }
            // Only a write interest must go: an idle socket is always writable.
            guard w.events.contains(.write) else { return .none }
            w.events = .read
            return .update(w.id, .read)
        }
        guard var w = watches[fd] else { return .watch(events) }
        let changed = w.events != events
        w.events = events
        w.parked = false
        watches[fd] = w
        return changed ? .update(w.id, events) : .none
    }

    /// The loop watches `fd` for `events` (after ``Action/watch(_:)``).
    package mutating func watched(_ fd: Int32, id: WatchID, events: IOEvents) {
        watches[fd] = Watch(id: id, events: events, parked: false)
    }

    /// The loop reports `fd` ready.
    package mutating func ready(_ fd: Int32) -> Ready {
        guard let w = watches[fd], w.parked else { return .tellCurl }
        watches.removeValue(forKey: fd)
        return .unwatch(w.id)
    }

    /// curl opened the connection socket `fd`. A watch still held for this number belonged to a
    /// descriptor closed behind the client's back: it is returned, to end.
    package mutating func opened(_ fd: Int32) -> WatchID? {
        connectionSockets.insert(fd)
        return watches.removeValue(forKey: fd)?.id
    }

    /// curl is about to close `fd`: its watch, if any, to end before the number can be reused.
    package mutating func closing(_ fd: Int32) -> WatchID? {
        connectionSockets.remove(fd)
        return watches.removeValue(forKey: fd)?.id
    }

    /// Forgets every socket; returns the watches to end (the client closes).
    package mutating func removeAll() -> [WatchID] {
        defer {
            watches.removeAll()
            connectionSockets.removeAll()
        }
        return watches.values.map(\.id)
    }
}
