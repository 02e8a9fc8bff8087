import Foundation

/// Hides secrets in settings and locations before they reach logs, errors or descriptions.
package enum Redaction {
    /// `scheme://user:secret@host` becomes `scheme://user:***@host`; other text is returned unchanged.
    package static func location(_ text: String) -> String {
        guard let schemeEnd = text.range(of: "://") else { return text }
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard let at = authority.lastIndex(of: "@") else { return text }
        let userinfo = authority[..<at]
        let user = userinfo.firstIndex(of: ":").map { userinfo[..<$0] } ?? userinfo
        let redactedUser = userinfo.contains(":") ? "\(user):***" : (user.isEmpty ? "" : "***")
        return String(text[..<schemeEnd.upperBound]) + redactedUser + String(rest[at...])
    }

    /// True for option names that hold secrets (PASSWORD, SECRET, TOKEN, ...).
    package static func isSecret(_ optionName: String) -> Bool {
        let n = optionName.uppercased()
        return n.contains("PASSWORD") || n.contains("SECRET") || n.contains("TOKEN") || n == "AUTH"
    }
}
