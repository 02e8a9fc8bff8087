import CoreMetrics
import TandemLoop
import Tracing

import Foundation

/// OPTIONS of one cache with typed, checked accessors.
@_spi(Backend) public struct BackendOptions: Sendable {
    /// The alias the options belong to.
    public let alias: String
    /// The raw options.
    public let values: [String: SettingValue]

    /// Wraps raw options.
    public init(alias: String, values: [String: SettingValue]) {
        self.alias = alias
        self.values = values
    }

    private func error(_ name: String, _ reason: String) -> CacheError {
        .invalidSetting(alias: alias, field: "OPTIONS.\(name)", reason: reason)
    }

    /// An integer option within `range`.
    public func int(_ name: String, default d: Int, range: ClosedRange<Int> = Int.min...Int.max) throws -> Int {
        guard let v = values[name] else { return d }
        guard case .int(let i) = v else { throw error(name, "expected an integer, got \(v.typeName) \(v)") }
        guard range.contains(i) else { throw error(name, "\(i) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return i
    }

    /// A number option (integers accepted) within `range`.
    public func double(_ name: String, default d: Double, range: ClosedRange<Double> = -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude) throws -> Double {
        guard let v = values[name] else { return d }
        let x: Double
        switch v {
        case .int(let i): x = Double(i)
        case .double(let dd): x = dd
        default: throw error(name, "expected a number, got \(v.typeName) \(v)")
        }
        guard range.contains(x) else { throw error(name, "\(x) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return x
    }

    /// A boolean option.
    public func bool(_ name: String, default d: Bool) throws -> Bool {
        guard let v = values[name] else { return d }
        guard case .bool(let b) = v else { throw error(name, "expected a boolean, got \(v.typeName) \(v)") }
        return b
    }

    /// A string option.
    public func string(_ name: String) throws -> String? {
        guard let v = values[name] else { return nil }
        guard case .string(let s) = v else {
            throw error(name, "expected a string, got \(v.typeName)\(Redaction.isSecret(name) ? "" : " \(v)")")
        }
        return s
    }
}
