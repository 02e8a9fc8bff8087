import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A thread-local pointer slot (a pthread key), for the markers the bridges and guard need.
final class ThreadSlot: Sendable {
    private let key: pthread_key_t
    init() {
        var k = pthread_key_t()
        precondition(pthread_key_create(&k, nil) == 0, "pthread_key_create failed")
        key = k
    }
    var value: UnsafeMutableRawPointer? {
        get { pthread_getspecific(key) }
    }
    func set(_ v: UnsafeMutableRawPointer?) { pthread_setspecific(key, v) }
}
