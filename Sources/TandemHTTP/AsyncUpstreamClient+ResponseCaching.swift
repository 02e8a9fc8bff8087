import Foundation
import HTTPTypes
import Logging
import Synchronization
import TandemCache
import TandemLoop

extension AsyncUpstreamClient {
    /// Sends a GET through the response cache; `fetch` does the network part.
    func sendCaching(_ request: UpstreamRequest, _ rc: ResponseCaching,
                     fetch: @escaping @Sendable (UpstreamRequest) async throws -> UpstreamResponse) async throws -> UpstreamResponse {
        try request.validate()
        let sent = client.sentHeaders(request)
        // A range request is neither served from the cache nor stored: its answer is a part.
        let metrics = client.metrics
        if sent.contains(.range) || sent.contains(.ifRange) {
            metrics?.cacheLookup(.bypass)
            return try await fetch(request)
        }
        let requestCC = CacheControl(sent[values: .cacheControl].joined(separator: ", "))
        let key = ResponseCaching.key(request.url)
        let now = Date().timeIntervalSince1970
        // A cache that fails is a miss: the upstream still answers.
        var entry: StoredResponse? = requestCC.noStore ? nil : ((try? await rc.cache.async.get(key) as [UInt8]?) ?? nil)
            .flatMap { StoredResponse(encoded: $0) }
        if let e = entry, e.requestURL != request.url || !varyMatches(e, sent) { entry = nil }
        guard let stored = entry else {
            metrics?.cacheLookup(requestCC.noStore ? .bypass : .miss)
            return try await fetchAndStore(request, rc, key, requestCC, fetch: fetch)
        }

        let age = stored.currentAge(now: now)
        let lifetime = stored.freshnessLifetime
        let mustCheck = stored.noCache || requestCC.noCache
        if !mustCheck && age < lifetime {
            metrics?.cacheLookup(.hit)
            return stored.served(now: now)
        }

        let staleBy = age - lifetime
        if !mustCheck, !stored.mustRevalidate, let swr = stored.staleWhileRevalidate, staleBy <= swr {
            if client.backgroundRefreshes.begin(key) {
                let refreshes = client.backgroundRefreshes
                Task {
                    _ = try? await self.revalidate(request, rc, key, stored, requestCC, fetch: fetch)
                    refreshes.end(key)
                }
            }
            metrics?.cacheLookup(.stale)
            return stored.served(now: now)
        }

        do {
            let (response, fromCache) = try await revalidate(request, rc, key, stored, requestCC, fetch: fetch)
            if !fromCache && response.status.code >= 500, let served = staleIfError(stored, staleBy) {
                metrics?.cacheLookup(.stale)
                return served
            }
            metrics?.cacheLookup(fromCache ? .revalidated : .miss)
            return response
        } catch let e as UpstreamError {
            if let served = staleIfError(stored, staleBy) {
                metrics?.cacheLookup(.stale)
                return served
            }
            metrics?.cacheLookup(.miss)
            throw e
        }
    }

    private func staleIfError(_ stored: StoredResponse, _ staleBy: Double) -> UpstreamResponse? {
        guard !stored.mustRevalidate, let sie = stored.staleIfError, staleBy <= sie else { return nil }
        return stored.served(now: Date().timeIntervalSince1970)
    }

    /// Whether the headers a request sends have the values the stored response's `Vary` recorded.
    private func varyMatches(_ stored: StoredResponse, _ sent: HTTPFields) -> Bool {
        stored.vary.allSatisfy { name, value in varyValue(name, sent) == value }
    }

    /// A request's value of a header named by `Vary`: every line of it, joined (absent: "").
    private func varyValue(_ name: String, _ sent: HTTPFields) -> String {
        HTTPField.Name(name).map { sent[values: $0].joined(separator: ", ") } ?? ""
    }

    /// A conditional request for a stored response. Returns the response to serve, and whether it
    /// came from the cache (a 304).
    private func revalidate(_ request: UpstreamRequest, _ rc: ResponseCaching, _ key: String, _ stored: StoredResponse,
                            _ requestCC: CacheControl,
                            fetch: @escaping @Sendable (UpstreamRequest) async throws -> UpstreamResponse) async throws -> (UpstreamResponse, Bool) {
        guard stored.hasValidator else { return (try await fetchAndStore(request, rc, key, requestCC, fetch: fetch), false) }
        var conditional = request
        if let etag = stored.etag { conditional.headers[.ifNoneMatch] = etag }
        if let lm = stored.lastModified { conditional.headers[.ifModifiedSince] = lm }
        let sent = Date().timeIntervalSince1970
        let response = try await fetch(conditional)
        let received = Date().timeIntervalSince1970
        guard response.status.code == 304 else {
            return (try await store(response, request, rc, key, requestCC, sent: sent, received: received), false)
        }
        var refreshed = stored
        refreshed.refresh(with: response, requestTime: sent, responseTime: received)
        // The 304's headers join the stored ones: if they make the answer one a shared cache must not
        // keep (private, no-store, a cookie), it is served to this caller and dropped from the cache.
        let cc = CacheControl(response.combinedHeader("Cache-Control"))
        if cc.noStore || cc.isPrivate || response.header("Set-Cookie") != nil {
            _ = try? await rc.cache.async.delete(key)
        } else {
            try? await put(refreshed, rc, key)
        }
        return (refreshed.served(now: received), true)
    }

    private func fetchAndStore(_ request: UpstreamRequest, _ rc: ResponseCaching, _ key: String, _ requestCC: CacheControl,
                               fetch: @escaping @Sendable (UpstreamRequest) async throws -> UpstreamResponse) async throws -> UpstreamResponse {
        let sent = Date().timeIntervalSince1970
        let response = try await fetch(request)
        return try await store(response, request, rc, key, requestCC, sent: sent, received: Date().timeIntervalSince1970)
    }

    /// Stores `response` if a shared cache may; returns it either way.
    private func store(_ response: UpstreamResponse, _ request: UpstreamRequest, _ rc: ResponseCaching, _ key: String,
                       _ requestCC: CacheControl, sent: Double, received: Double) async throws -> UpstreamResponse {
        let cc = CacheControl(response.combinedHeader("Cache-Control"))
        let headersSent = client.sentHeaders(request)
        let authorized = headersSent.contains(.authorization)
        guard !requestCC.noStore, !cc.noStore, !cc.isPrivate, ResponseCaching.storableStatuses.contains(response.status.code),
              response.body.count <= rc.maxBodyBytes, !authorized || cc.isPublic || cc.sMaxAge != nil,
              response.header("Set-Cookie") == nil
        else { return response }
        var vary: [(String, String)] = []
        for name in (response.combinedHeader("Vary") ?? "").split(separator: ",") {
            let n = name.trimmingCharacters(in: .whitespaces).lowercased()
            if n == "*" || HTTPField.Name(n) == nil && !n.isEmpty { return response }  // never reusable
            if !n.isEmpty { vary.append((n, varyValue(n, headersSent))) }
        }
        let entry = StoredResponse(status: response.status.code, rawHeaders: response.rawHeaders, body: response.body,
                                   url: response.url, requestURL: request.url, requestTime: sent, responseTime: received,
                                   vary: vary)
        // Worth keeping only if it can be served: fresh for a while, revalidated, or served stale.
        guard entry.freshnessLifetime > 0 || entry.hasValidator || (entry.staleWhileRevalidate ?? 0) > 0 || (entry.staleIfError ?? 0) > 0
        else { return response }
        try? await put(entry, rc, key)
        return response
    }

    /// Keeps an entry for its freshness plus its stale windows (at least a minute, an hour when only
    /// a validator makes it reusable).
    private func put(_ entry: StoredResponse, _ rc: ResponseCaching, _ key: String) async throws {
        let keep = entry.freshnessLifetime + max(entry.staleWhileRevalidate ?? 0, entry.staleIfError ?? 0)
        try await rc.cache.async.set(key, entry.encoded, timeout: .seconds(max(entry.hasValidator ? 3600 : 60, keep)))
    }
}

extension AsyncUpstreamClient {
    /// After a `2xx` or `3xx` answer to a method that changes the resource, drops what the response
    /// cache holds for the request's URL and for the answer's `Location` and `Content-Location` when
    /// they name the same origin (RFC 9111 §4.4). A failed delete is logged: the stored answer then
    /// stays until it expires.
    func invalidateStored(after response: UpstreamResponse, to request: UpstreamRequest, _ rc: ResponseCaching) async {
        guard (200..<400).contains(response.status.code) else { return }
        var urls = [request.url]
        if let target = URL(string: request.url), let origin = Origin(target) {
            for name in ["Location", "Content-Location"] {
                guard let value = response.header(name), let u = URL(string: value, relativeTo: target)?.absoluteURL,
                      Origin(u) == origin else { continue }
                urls.append(u.absoluteString)
            }
        }
        for url in Set(urls) {
            do {
                _ = try await rc.cache.async.delete(ResponseCaching.key(url))
            } catch {
                ResponseCaching.logger.warning("response cache: could not drop the stored answer after a change; it is served until it expires",
                                               metadata: ["method": "\(request.method)", "url": "\(url)", "error": "\(error)"])
            }
        }
    }
}
