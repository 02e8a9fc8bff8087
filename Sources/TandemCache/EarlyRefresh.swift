import Foundation

/// Probabilistic early recomputation (XFetch, Vattani et al.): a caller of `getOrSet` that finds the
/// value recomputes it before it expires when `now - delta * beta * ln(rand()) >= expiry`, `delta`
/// being how long the last computation took. One caller per process refreshes (the others keep getting
/// the value meanwhile), and the hotter the key, the earlier someone does, so the value never expires
/// under its readers. `beta` 1 is the paper's choice; larger refreshes earlier.
///
/// The expiry and `delta` live beside the value under `<key>:tandem-xf` (decimal text), written only
/// by `getOrSet` calls that use early refresh; a value without them is served and never refreshed
/// early. In settings: `EARLY_REFRESH_BETA`; per call: `getOrSet(key, earlyRefresh: 1)`.
struct EarlyRefresh: Sendable {
    /// When the value expires, in milliseconds since 1970 (shared by every process).
    let expiresAtMs: Double
    /// How long computing it took, in milliseconds.
    let deltaMs: Double

    /// The key the metadata of `made` lives under; nil when too long for memcached.
    static func key(for made: String) -> String? {
        let k = made + ":tandem-xf"
        return k.utf8.count <= 250 ? k : nil
    }

    static var nowMs: Double { Date().timeIntervalSince1970 * 1000 }

    /// Metadata for a value computed in `deltaMs` that lives `seconds` from now.
    init(seconds: Double, deltaMs: Double) {
        expiresAtMs = EarlyRefresh.nowMs + seconds * 1000
        self.deltaMs = deltaMs
    }

    /// Parses stored metadata; nil for anything else.
    init?(_ stored: StoredValue?) {
        guard let stored, let text = String(validating: stored.bytes, as: UTF8.self) else { return nil }
        let parts = text.split(separator: " ")
        guard parts.count == 2, let e = Double(parts[0]), let d = Double(parts[1]), e.isFinite, d.isFinite, d >= 0 else { return nil }
        expiresAtMs = e
        deltaMs = d
    }

    var stored: StoredValue { StoredValue(bytes: Array("\(expiresAtMs) \(deltaMs)".utf8), kind: .string) }

    /// XFetch's test with a fresh random number.
    func shouldRefresh(beta: Double) -> Bool {
        let r = Double.random(in: Double.leastNonzeroMagnitude..<1)
        return EarlyRefresh.nowMs - deltaMs * beta * Foundation.log(r) >= expiresAtMs
    }
}

extension SingleFlights {
    /// Leads a new flight for `key` if none is in progress; nil when one is (the caller does not wait).
    func tryLead(_ key: String) -> Flight? {
        if case .leader(let f) = join(key) { return f }
        return nil
    }
}
