/// A read's claim to keep its reply in the near cache (see ``NearCache``).
struct NearMark: Sendable {
    let key: String
    let token: UInt64
    /// The client id of the invalidation connection the reading connection redirects to.
    let redirect: Int64
}
