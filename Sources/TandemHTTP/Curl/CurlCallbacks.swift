import CCurl
import CCurlShim
import Foundation

// The C callbacks curl calls on the loop thread, from inside curl_multi_socket_action. They only
// record what curl said (bytes, header lines, sockets, timer) on the transfer or the multi; none
// calls curl.

let curlWriteCallback: ccurl_data_callback = { data, size, count, user in
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

let curlHeaderCallback: ccurl_data_callback = { data, size, count, user in
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

let curlOpenSocketCallback: ccurl_opensocket_callback = { user, _, address in
    guard let address else { return CURL_SOCKET_BAD }
    let fd = ccurl_open_socket(address)
    if fd >= 0, let user { Unmanaged<CurlMulti>.fromOpaque(user).takeUnretainedValue().socketOpened(fd) }
    return fd
}

let curlCloseSocketCallback: ccurl_closesocket_callback = { user, fd in
    if let user { Unmanaged<CurlMulti>.fromOpaque(user).takeUnretainedValue().socketClosing(fd) }
    return close(fd)
}

let curlSocketCallback: ccurl_socket_callback = { _, fd, what, user, socketp in
    guard let user else { return 0 }
    let interest: CurlSockets.Interest = switch what {
    case CURL_POLL_IN: .read
    case CURL_POLL_OUT: .write
    case CURL_POLL_INOUT: .readWrite
    default: .remove
    }
    Unmanaged<CurlMulti>.fromOpaque(user).takeUnretainedValue().socketChanged(fd, interest)
    return 0
}

let curlTimerCallback: ccurl_timer_callback = { _, ms, user in
    guard let user else { return 0 }
    Unmanaged<CurlMulti>.fromOpaque(user).takeUnretainedValue().timerChanged(ms)
    return 0
}
