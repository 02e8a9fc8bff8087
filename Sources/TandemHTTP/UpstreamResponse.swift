import HTTPTypes

/// An upstream's answer.
public struct UpstreamResponse: Sendable {
    /// The status (compare with a literal or a name: `status == 200`, `status == .ok`).
    public var status: HTTPResponse.Status
    /// The header lines as received (of the final response when redirects were followed).
    public var rawHeaders: [UInt8]
    /// The header fields in order, parsed from ``rawHeaders`` (a line whose name is not a valid field
    /// name is left out; ``rawHeaders`` keeps it).
    public var headers: HTTPFields {
        var out = HTTPFields()
        forEachHeaderLine { name, value in
            if let n = HTTPField.Name(String(decoding: name, as: UTF8.self)) {
                out.append(HTTPField(name: n, lenientValue: value))
            }
        }
        return out
    }

    /// Calls `body` with the name and trimmed value of every `name: value` line of ``rawHeaders``.
    func forEachHeaderLine(_ body: (ArraySlice<UInt8>, ArraySlice<UInt8>) -> Void) {
        var start = rawHeaders.startIndex
        while start < rawHeaders.endIndex {
            let end = rawHeaders[start...].firstIndex(of: 0x0a) ?? rawHeaders.endIndex
            let line = rawHeaders[start..<end]
            if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
                func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0d || b == 0x0a }
                var vs = colon + 1
                var ve = end
                while vs < ve, isSpace(rawHeaders[vs]) { vs += 1 }
                while ve > vs, isSpace(rawHeaders[ve - 1]) { ve -= 1 }
                body(rawHeaders[start..<colon], rawHeaders[vs..<ve])
            }
            start = end < rawHeaders.endIndex ? end + 1 : end
        }
    }
    /// The body bytes.
    public var body: [UInt8]
    /// Timings reported by libcurl.
    public var timings: Timings
    /// The URL that answered (after redirects).
    public var url: String

    /// How long the phases of the request took (libcurl's figures, each from the start).
    public struct Timings: Sendable {
        /// Until the host name was resolved (0 when a kept-alive connection was reused).
        public var nameLookup: Duration
        /// Until the connection was established (0 when a kept-alive one was reused).
        public var connect: Duration
        /// Until the TLS handshake was done (0 for plain HTTP or a reused connection).
        public var tlsHandshake: Duration
        /// Until the first response byte.
        public var firstByte: Duration
        /// Until the end.
        public var total: Duration

        /// Timings of a request.
        public init(nameLookup: Duration = .zero, connect: Duration, tlsHandshake: Duration = .zero,
                    firstByte: Duration, total: Duration) {
            self.nameLookup = nameLookup
            self.connect = connect
            self.tlsHandshake = tlsHandshake
            self.firstByte = firstByte
            self.total = total
        }
    }

    /// The value of the first header line named `name` (case-insensitive), without parsing the others.
    public func header(_ name: String) -> String? {
        let wanted = Array(name.utf8)
        var found: String?
        forEachHeaderLine { n, v in
            guard found == nil, n.count == wanted.count,
                  zip(n, wanted).allSatisfy({ $0 | 0x20 == $1 | 0x20 }) else { return }
            found = String(decoding: v, as: UTF8.self)
        }
        return found
    }

    /// Every line named `name` (case-insensitive) joined with ", ", as RFC 9110 §5.3 combines the lines
    /// of a list field (`Cache-Control`, `Vary`); nil when there is none. Decisions on a list field read
    /// this, never only its first line.
    func combinedHeader(_ name: String) -> String? {
        let wanted = Array(name.utf8)
        var found: [String] = []
        forEachHeaderLine { n, v in
            guard n.count == wanted.count, zip(n, wanted).allSatisfy({ $0 | 0x20 == $1 | 0x20 }) else { return }
            found.append(String(decoding: v, as: UTF8.self))
        }
        return found.isEmpty ? nil : found.joined(separator: ", ")
    }

    /// Creates a response (the client does this).
    public init(status: HTTPResponse.Status, rawHeaders: [UInt8], body: [UInt8], timings: Timings, url: String) {
        self.status = status
        self.rawHeaders = rawHeaders
        self.body = body
        self.timings = timings
        self.url = url
    }

    /// The body as UTF-8 text, if it is valid UTF-8.
    public var text: String? { String(validating: body, as: UTF8.self) }
}

