import CCurl
import CCurlShim
import Foundation
import HTTPTypes
import TandemLoop

/// One request in flight. The caller creates it (with its buffers), the loop fills it, and the caller
/// gets it back through `promise` and builds the response from it: what the loop writes lives in
/// memory the caller's thread allocated and frees, so the two threads do not pass malloc's chunks
/// back and forth (which made them contend on the allocator's locks).
final class Transfer: @unchecked Sendable, LoopPromiseCanceller {
    // Why @unchecked Sendable is safe: the caller sets `request`, `maxBody` and the empty buffers before
    // handing the transfer to the loop; from then on only the loop thread touches the mutable fields
    // (curl calls the callbacks from `curl_multi_socket_action`, which only the loop calls), until it
    // completes `promise`. The caller reads them only after that completion (the promise's lock orders
    // the accesses), and never after a cancellation, when the loop may still be writing.
    let request: UpstreamRequest
    let maxBody: Int
    let multi: CurlMulti
    /// Completed by the loop when the fields below hold the response, or with an error. (It holds no
    /// reference back to the transfer, so the two never keep each other alive.)
    var promise: LoopPromise<Void>!
    var easy: UnsafeMutableRawPointer?
    /// The request's header list: owned here, freed in `deinit`.
    var headerList: UnsafeMutablePointer<curl_slist>?
    var body: [UInt8] = []
    /// The header lines of the last response, as received (parsed later, off the loop thread).
    var rawHeaders: [UInt8] = []
    var tooLarge = false
    var status = 0
    var timings = UpstreamResponse.Timings(connect: .zero, firstByte: .zero, total: .zero)
    var finalURL: String

    init(request: UpstreamRequest, maxBody: Int, multi: CurlMulti) {
        self.request = request
        self.maxBody = maxBody
        self.multi = multi
        finalURL = request.url
        // Room for a typical small answer, allocated here on the caller's thread (no body for HEAD).
        rawHeaders.reserveCapacity(512)
        if request.method != .head { body.reserveCapacity(min(maxBody, 1024)) }
    }

    deinit { curl_slist_free_all(headerList) }

    /// The waiting task was cancelled (any thread): the loop removes the easy handle.
    func promiseCancelled() { multi.enqueueCancel(self) }

    /// The response (the caller's thread, after `promise` succeeded).
    func response() -> UpstreamResponse {
        // Taking the promise's lock orders these reads after the loop's writes in a way
        // ThreadSanitizer can see: a continuation resumed before its task finished suspending hands
        // over through the concurrency runtime's own atomics, which the sanitizer does not follow.
        _ = promise.isCompleted
        return UpstreamResponse(status: HTTPResponse.Status(code: status), rawHeaders: rawHeaders, body: body, timings: timings, url: finalURL)
    }
}
