import Dispatch
import Foundation
import Synchronization

/// A loop setting from the environment that cannot be used.
public struct EventLoopSettingError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The variable's name.
    public let name: String
    /// Its value.
    public let value: String
    /// What is wrong with it.
    public let reason: String
    /// Names the variable, its value and the rule.
    public var description: String { "\(name)='\(value)': \(reason)" }
    /// An error for the variable `name` whose `value` breaks `reason`.
    public init(name: String, value: String, reason: String) {
        self.name = name
        self.value = value
        self.reason = reason
    }
}
