import Foundation
import HTTPTypes
import Logging
import Synchronization
import TandemCache
import TandemLoop

/// HTTP-dates (IMF-fixdate, RFC 9110 §5.6.7).
enum HTTPDate {
    private static let formatter: DateFormatter = {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return f
    }()
    private static let lock = Mutex(())

    /// Seconds since 1970, or nil for text that is not an HTTP-date.
    static func parse(_ text: String) -> Double? {
        lock.locked { _ in formatter.date(from: text)?.timeIntervalSince1970 }
    }

    static func format(_ seconds: Double) -> String {
        lock.locked { _ in formatter.string(from: Date(timeIntervalSince1970: seconds)) }
    }
}
