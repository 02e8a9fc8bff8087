import Foundation
import HTTPTypes
import Logging
import Synchronization
import TandemCache
import TandemLoop

/// The `Cache-Control` directives a shared cache acts on.
struct CacheControl {
    var noStore = false
    var noCache = false
    var isPrivate = false
    var isPublic = false
    var mustRevalidate = false
    var maxAge: Double?
    var sMaxAge: Double?
    var staleWhileRevalidate: Double?
    var staleIfError: Double?

    init(_ header: String?) {
        guard let header else { return }
        for part in header.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1)
            let name = kv[0].trimmingCharacters(in: .whitespaces).lowercased()
            let value = kv.count > 1 ? Double(kv[1].trimmingCharacters(in: CharacterSet(charactersIn: " \t\""))) : nil
            switch name {
            case "no-store": noStore = true
            case "no-cache": noCache = true
            case "private": isPrivate = true
            case "public": isPublic = true
            case "must-revalidate", "proxy-revalidate": mustRevalidate = true
            case "max-age": maxAge = value.map { max(0, $0) }
            case "s-maxage": sMaxAge = value.map { max(0, $0) }
            case "stale-while-revalidate": staleWhileRevalidate = value.map { max(0, $0) }
            case "stale-if-error": staleIfError = value.map { max(0, $0) }
            default: continue
            }
        }
    }
}
