/// The query part of a cache URL (`?name=value&name=value`), parsed strictly: a malformed query is an
/// error that names what is wrong, never a crash and never a silently dropped item.
package enum URLQuery {
    /// Splits `query` (the text after `?`) into percent-decoded name/value pairs, in order. An empty
    /// query, and empty items (`a=1&&b=2`), give no pairs. Throws a reason for an item without a name
    /// (`=1`, `=`), a repeated name, or a bad percent escape.
    package static func parse(_ query: Substring) throws(URLQueryError) -> [(name: String, value: String)] {
        var out: [(name: String, value: String)] = []
        var seen: Set<String> = []
        for item in query.split(separator: "&", omittingEmptySubsequences: true) {
            let name: Substring
            let value: Substring
            if let eq = item.firstIndex(of: "=") {
                name = item[..<eq]
                value = item[item.index(after: eq)...]
            } else {
                name = item
                value = ""
            }
            guard !name.isEmpty else { throw URLQueryError(reason: "a query parameter has no name (\"\(item)\")") }
            guard let n = decode(name), let v = decode(value) else {
                throw URLQueryError(reason: "query parameter \"\(name)\" has a malformed percent escape")
            }
            guard seen.insert(n.lowercased()).inserted else {
                throw URLQueryError(reason: "query parameter '\(n)' is given twice")
            }
            out.append((n, v))
        }
        return out
    }

    /// Splits `scheme://rest?query` into the lower-cased scheme, what comes between `://` and the first
    /// `?`, and the parsed query. Nil when `text` has no `://`.
    package static func splitURL(_ text: String) throws(URLQueryError)
        -> (scheme: String, rest: String, query: [(name: String, value: String)])? {
        guard let schemeEnd = text.range(of: "://") else { return nil }
        let scheme = text[..<schemeEnd.lowerBound].lowercased()
        let after = text[schemeEnd.upperBound...]
        guard let q = after.firstIndex(of: "?") else { return (scheme, String(after), []) }
        return (scheme, String(after[..<q]), try parse(after[after.index(after: q)...]))
    }

    /// ``splitURL(_:)`` whose failures (a malformed query, no `scheme://`) are the settings error
    /// `bad` makes of the reason.
    package static func splitURL(_ text: String, expected: String, _ bad: (String) -> CacheError) throws(CacheError)
        -> (scheme: String, rest: String, query: [(name: String, value: String)]) {
        let parsed: (scheme: String, rest: String, query: [(name: String, value: String)])?
        do {
            parsed = try splitURL(text)
        } catch {
            throw bad(error.reason)
        }
        guard let parsed else { throw bad(expected) }
        return parsed
    }

    /// Percent-decodes `text` (`+` stays a plus); nil for a `%` not followed by two hex digits or
    /// bytes that are not UTF-8.
    static func decode(_ text: Substring) -> String? {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var it = Array(text.utf8)[...]
        while let b = it.popFirst() {
            guard b == UInt8(ascii: "%") else { bytes.append(b); continue }
            guard let h = it.popFirst(), let l = it.popFirst(), let hi = hexValue(h), let lo = hexValue(l) else { return nil }
            bytes.append(hi << 4 | lo)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Why a URL query could not be parsed.
package struct URLQueryError: Error {
    package let reason: String
}
