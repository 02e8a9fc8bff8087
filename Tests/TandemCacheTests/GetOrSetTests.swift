@_spi(Backend) @testable import TandemCache
import Testing

/// `getOrSet`'s decisions, driven step by step without a backend: each test plays what the backend
/// and the other callers would answer and checks the step that comes next.
@Suite struct GetOrSetTests {
    let cache = Cache(alias: "getorset", backend: DummyBackend())
    var core: CacheCore { cache.core }

    func procedure(lock: StampedeLock? = nil, beta: Double? = nil, waiterCancelled: GetOrSet<String>.WaiterCancelled = .joinAgain,
                   made: String = ":1:k") -> GetOrSet<String> {
        GetOrSet<String>(core: core, made: made, timeout: .seconds(60), beta: beta, lock: lock, waiterCancelled: waiterCancelled)
    }

    func stored(_ s: String) throws -> StoredValue { try core.encode(s, key: ":1:k") }

    @Test func aHitIsReturnedWithoutJoiningAFlight() throws {
        var p = procedure()
        guard case .read = p.start() else { Issue.record("first step reads"); return }
        guard case .done(let v) = p.read("cached") else { Issue.record("a hit is done"); return }
        #expect(v == "cached")
        #expect(core.flights.count == 0)
    }

    @Test func aMissLeadsProducesAddsAndReturnsWhatWon() throws {
        var p = procedure()
        _ = p.start()
        guard case .joinFlight = p.read(nil) else { Issue.record("a miss joins the flight"); return }
        let role = core.flights.join(":1:k")
        guard case .leader = role else { Issue.record("first caller leads"); return }
        guard case .readShared = p.joined(role) else { Issue.record("the leader reads again inside the flight"); return }
        guard case .produce = try p.readShared(nil) else { Issue.record("still missing: produce"); return }
        guard case .add(let fresh) = try p.produced("mine", took: .milliseconds(1)) else { Issue.record("then add"); return }
        #expect(fresh == "mine")
        guard case .readShared = p.added() else { Issue.record("then read back"); return }
        // Another caller's add won the race: its value is what this caller returns and shares.
        guard case .finish(_, .value(let shared), let v) = try p.readShared(try stored("theirs")) else {
            Issue.record("the value that won ends the flight"); return
        }
        #expect(v == "theirs")
        #expect(shared == (try stored("theirs")))
    }

    @Test func aValueFoundInsideTheFlightEndsItWithoutProducing() throws {
        var p = procedure(lock: StampedeLock())
        _ = p.start()
        _ = p.read(nil)
        _ = p.joined(core.flights.join(":1:k"))
        guard case .finish(_, _, let v) = try p.readShared(try stored("landed")) else { Issue.record("no producer, no lock"); return }
        #expect(v == "landed")
    }

    @Test func aTakenLockIsHeldWhileProducingAndReleasedBeforeTheFlightEnds() throws {
        var p = procedure(lock: StampedeLock())
        _ = p.start()
        _ = p.read(nil)
        _ = p.joined(core.flights.join(":1:k"))
        guard case .takeLock(let key, let token, let seconds) = try p.readShared(nil) else { Issue.record("take the lock"); return }
        #expect(key == StampedeLock.key(for: ":1:k"))
        #expect(seconds == 10)
        guard case .produce = p.lockTaken(true) else { Issue.record("taken: produce"); return }
        _ = try p.produced("mine", took: .zero)
        _ = p.added()
        guard case .releaseLock(let held) = try p.readShared(nil) else { Issue.record("release before the flight ends"); return }
        #expect(held.key == key && held.token == token)
        guard case .finish(_, _, let v) = p.released() else { Issue.record("then end the flight"); return }
        #expect(v == "mine", "nothing read back: the caller's own value")
    }

    @Test func aLockHeldElsewhereIsPolledWhileTheWaitLasts() throws {
        var p = procedure(lock: StampedeLock(wait: .seconds(3600), pollInterval: .milliseconds(10)))
        _ = p.start()
        _ = p.read(nil)
        _ = p.joined(core.flights.join(":1:k"))
        _ = try p.readShared(nil)
        guard case .sleep(let interval) = p.lockTaken(false) else { Issue.record("held elsewhere: poll"); return }
        #expect(interval == .milliseconds(10))
        for _ in 0..<3 {
            guard case .readShared = p.slept() else { Issue.record("after a sleep, look for the value"); return }
            guard case .sleep = try p.readShared(nil) else { Issue.record("not there yet: sleep again"); return }
        }
    }

    @Test func aLockHeldElsewhereWithNoWaitLeftIsComputedWithoutIt() throws {
        var p = procedure(lock: StampedeLock(wait: .zero))
        _ = p.start()
        _ = p.read(nil)
        _ = p.joined(core.flights.join(":1:k"))
        _ = try p.readShared(nil)
        guard case .produce = p.lockTaken(false) else { Issue.record("no wait: produce at once"); return }
        _ = try p.produced("mine", took: .zero)
        _ = p.added()
        guard case .finish = try p.readShared(nil) else { Issue.record("no lock to release: it was never held"); return }
    }

    @Test func aPollThatFindsTheHoldersValueReturnsIt() throws {
        var p = procedure(lock: StampedeLock(wait: .seconds(60)))
        _ = p.start()
        _ = p.read(nil)
        _ = p.joined(core.flights.join(":1:k"))
        _ = try p.readShared(nil)
        guard case .sleep = p.lockTaken(false) else { Issue.record("poll"); return }
        _ = p.slept()
        guard case .finish(_, _, let v) = try p.readShared(try stored("holder's")) else { Issue.record("found"); return }
        #expect(v == "holder's")
    }

    @Test func waitersShareTheLeadersValueOrErrorAndJoinAgainWhenItGaveUp() throws {
        var p = procedure()
        _ = p.start()
        _ = p.read(nil)
        _ = core.flights.join(":1:k")  // someone else leads
        let role = core.flights.join(":1:k")
        guard case .wait = p.joined(role) else { Issue.record("a second caller waits"); return }
        guard case .joinFlight = try p.flightEnded(.abandoned) else { Issue.record("leader gave up: join again"); return }
        guard case .joinFlight = try p.flightEnded(.waiterCancelled) else { Issue.record("blocking face joins again"); return }
        guard case .done(let v) = try p.flightEnded(.value(try stored("shared"))) else { Issue.record("shared value"); return }
        #expect(v == "shared")
        struct Boom: Error {}
        #expect(throws: Boom.self) { try p.flightEnded(.failed(Boom())) }
        var async = procedure(waiterCancelled: .throwCancellation)
        #expect(throws: CancellationError.self) { try async.flightEnded(.waiterCancelled) }
    }

    @Test func earlyRefreshStoresWithMetadataAndFallsBackWhenTheStoreLost() throws {
        var p = procedure(beta: 1)
        guard case .readWithMetadata(let made, let metaKey) = p.start() else { Issue.record("read value and metadata"); return }
        #expect(made == ":1:k" && metaKey != made)
        guard case .joinFlight = try p.readWithMetadata([:]) else { Issue.record("a miss joins"); return }
        _ = p.joined(core.flights.join(":1:k"))
        _ = try p.readShared(nil)
        guard case .store(_, let mode, .after(let seconds)) = try p.produced("mine", took: .milliseconds(5)) else {
            Issue.record("early refresh stores the value itself"); return
        }
        #expect(mode == .add && seconds == 60)
        guard case .storeMetadata(let key, _, _) = p.stored(true) else { Issue.record("then its metadata"); return }
        #expect(key == metaKey)
        guard case .finish(_, _, let v) = p.metadataStored() else { Issue.record("done"); return }
        #expect(v == "mine")

        var lost = procedure(beta: 1)
        _ = lost.start()
        _ = try lost.readWithMetadata([:])
        _ = lost.joined(core.flights.join(":1:k2"))
        _ = try lost.readShared(nil)
        _ = try lost.produced("mine", took: .zero)
        guard case .readShared = lost.stored(false) else { Issue.record("not stored: read what is there"); return }
        guard case .finish(_, _, let w) = try lost.readShared(nil) else { Issue.record("nothing there: own value"); return }
        #expect(w == "mine")
    }

    @Test func abandoningWhileHoldingTheLockReleasesItAndEndsTheFlight() throws {
        var p = procedure(lock: StampedeLock())
        _ = p.start()
        _ = p.read(nil)
        _ = p.joined(core.flights.join(":1:k"))
        _ = try p.readShared(nil)
        _ = p.lockTaken(true)
        struct Boom: Error {}
        let (held, flight, outcome) = p.abandon(Boom(), cancelled: false)
        #expect(held != nil, "the held lock is released")
        #expect(flight != nil, "the flight is ended")
        guard case .failed(let e) = outcome, e is Boom else { Issue.record("waiters get the error"); return }
        var other = procedure()
        let (_, _, cancelled) = other.abandon(CancellationError(), cancelled: false)
        guard case .abandoned = cancelled else { Issue.record("a cancelled leader abandons"); return }
    }
}
