import Foundation
import HTTPTypes
import Logging
import Synchronization
import TandemCache
import TandemLoop

/// A response as stored, with what a lookup needs parsed once, when it is stored: a cache hit parses
/// no header and no date. Stored as bytes in a compact binary form (see ``encoded``).
struct StoredResponse: Sendable {
    var status: Int
    var rawHeaders: [UInt8]
    var body: [UInt8]
    /// The URL that answered (after redirects).
    var url: String
    /// The URL the entry was stored for: a lookup whose request URL differs is a miss.
    var requestURL: String
    /// When the request was sent and the response received (seconds since 1970).
    var requestTime: Double
    var responseTime: Double
    /// The request's values of the headers the response's `Vary` names (lower-case names; "" absent).
    var vary: [(String, String)]
    // Parsed from the headers by `derive()`.
    var dateValue = 0.0
    var ageValue = 0.0
    var freshnessLifetime = 0.0
    var staleWhileRevalidate: Double?
    var staleIfError: Double?
    var noCache = false
    var mustRevalidate = false
    var etag: String?
    var lastModified: String?

    init(status: Int, rawHeaders: [UInt8], body: [UInt8], url: String, requestURL: String, requestTime: Double,
         responseTime: Double, vary: [(String, String)]) {
        self.status = status
        self.rawHeaders = rawHeaders
        self.body = body
        self.url = url
        self.requestURL = requestURL
        self.requestTime = requestTime
        self.responseTime = responseTime
        self.vary = vary
        derive()
    }

    var response: UpstreamResponse {
        UpstreamResponse(status: HTTPResponse.Status(code: status), rawHeaders: rawHeaders, body: body,
                     timings: .init(connect: .zero, firstByte: .zero, total: .zero), url: url)
    }

    /// Parses the headers once: RFC 9111 §4.2.1's freshness lifetime (for a shared cache), the `Date`
    /// and `Age` values, the directives and the validators.
    mutating func derive() {
        let r = response
        let cc = CacheControl(r.combinedHeader("Cache-Control"))
        dateValue = r.header("Date").flatMap(HTTPDate.parse) ?? responseTime
        ageValue = r.header("Age").flatMap { Double($0) } ?? 0
        if let s = cc.sMaxAge {
            freshnessLifetime = s
        } else if let m = cc.maxAge {
            freshnessLifetime = m
        } else if let expires = r.header("Expires") {
            // An Expires that is not a date means already expired.
            freshnessLifetime = HTTPDate.parse(expires).map { max(0, $0 - dateValue) } ?? 0
        } else {
            freshnessLifetime = 0
        }
        staleWhileRevalidate = cc.staleWhileRevalidate
        staleIfError = cc.staleIfError
        noCache = cc.noCache
        mustRevalidate = cc.mustRevalidate
        etag = r.header("ETag")
        lastModified = r.header("Last-Modified")
    }

    /// RFC 9111 §4.2.3.
    func currentAge(now: Double) -> Double {
        let apparent = max(0, responseTime - dateValue)
        let corrected = ageValue + (responseTime - requestTime)
        return max(apparent, corrected) + (now - responseTime)
    }

    var hasValidator: Bool { etag != nil || lastModified != nil }

    /// The stored response served with its current age (an `Age` line replaces any stored one).
    func served(now: Double) -> UpstreamResponse {
        var r = response
        var headers = rawHeaders
        while let last = headers.last, last == 0x0d || last == 0x0a { headers.removeLast() }
        var out: [UInt8] = []
        out.reserveCapacity(headers.count + 16)
        var start = headers.startIndex
        while start < headers.endIndex {
            let end = headers[start...].firstIndex(of: 0x0a).map { $0 + 1 } ?? headers.endIndex
            let line = headers[start..<end]
            let isAge = line.count >= 4 && line.prefix(4).map { $0 | 0x20 } == Array("age:".utf8)
            if !isAge { out += line }
            start = end
        }
        if let last = out.last, last != 0x0a { out += [0x0d, 0x0a] }
        out += Array("Age: \(Int(currentAge(now: now).rounded(.down)))\r\n\r\n".utf8)
        r.rawHeaders = out
        return r
    }

    /// A `304`'s headers replace the stored ones of the same name (RFC 9111 §3.2).
    mutating func refresh(with notModified: UpstreamResponse, requestTime: Double, responseTime: Double) {
        let updates = notModified.headers.filter { $0.name != .contentLength }
        let names = Set(updates.map { $0.name.canonicalName })
        var lines = String(decoding: rawHeaders, as: UTF8.self).components(separatedBy: "\r\n").filter { !$0.isEmpty }
        lines.removeAll { line in
            guard let colon = line.firstIndex(of: ":") else { return false }
            return names.contains(line[..<colon].lowercased())
        }
        lines += updates.map { "\($0.name.rawName): \($0.value)" }
        rawHeaders = Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8)
        self.requestTime = requestTime
        self.responseTime = responseTime
        derive()
    }

    // MARK: stored form

    private static let magic: [UInt8] = Array("TRC2".utf8)

    /// `TRC2`, then status, the times and the parsed values as fixed-width fields, then length-prefixed
    /// strings and byte runs: no JSON to parse on a hit.
    var encoded: [UInt8] {
        var w = ByteWriter()
        w.bytes(StoredResponse.magic, prefixed: false)
        w.u64(UInt64(max(0, status)))
        for d in [requestTime, responseTime, dateValue, ageValue, freshnessLifetime, staleWhileRevalidate ?? -1, staleIfError ?? -1] {
            w.u64(d.bitPattern)
        }
        w.u64((noCache ? 1 : 0) | (mustRevalidate ? 2 : 0) | (etag != nil ? 4 : 0) | (lastModified != nil ? 8 : 0))
        w.string(url)
        w.string(requestURL)
        w.string(etag ?? "")
        w.string(lastModified ?? "")
        w.u64(UInt64(vary.count))
        for (n, v) in vary { w.string(n); w.string(v) }
        w.bytes(rawHeaders)
        w.bytes(body)
        return w.out
    }

    /// Reads the stored form; nil for anything else (another writer's value is then a miss).
    init?(encoded: [UInt8]) {
        var r = ByteReader(encoded)
        guard r.take(4) == StoredResponse.magic[...], let status = r.u64() else { return nil }
        var d: [Double] = []
        for _ in 0..<7 {
            guard let x = r.u64() else { return nil }
            d.append(Double(bitPattern: x))
        }
        guard let flags = r.u64(), let url = r.string(), let requestURL = r.string(), let etag = r.string(), let lm = r.string(), let n = r.u64(), n < 1024
        else { return nil }
        var vary: [(String, String)] = []
        for _ in 0..<n {
            guard let k = r.string(), let v = r.string() else { return nil }
            vary.append((k, v))
        }
        guard let headers = r.bytes(), let body = r.bytes(), r.atEnd else { return nil }
        self.status = Int(status)
        self.rawHeaders = headers
        self.body = body
        self.url = url
        self.requestURL = requestURL
        self.requestTime = d[0]
        self.responseTime = d[1]
        self.vary = vary
        self.dateValue = d[2]
        self.ageValue = d[3]
        self.freshnessLifetime = d[4]
        self.staleWhileRevalidate = d[5] < 0 ? nil : d[5]
        self.staleIfError = d[6] < 0 ? nil : d[6]
        self.noCache = flags & 1 != 0
        self.mustRevalidate = flags & 2 != 0
        self.etag = flags & 4 != 0 ? etag : nil
        self.lastModified = flags & 8 != 0 ? lm : nil
    }
}
