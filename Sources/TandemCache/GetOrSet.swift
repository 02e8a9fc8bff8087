/// `getOrSet`'s decisions, written once for both faces: a value that says which step comes next and
/// is told what each step found. ``Cache`` runs the steps on the calling thread and ``AsyncCache``
/// suspends on them; neither decides anything of its own.
///
/// The procedure (Django's race-safe `get_or_set`, with single flight, a stampede lock and early
/// refresh):
/// 1. Read the key (with its early-refresh metadata when early refresh is on). A hit is returned,
///    unless early refresh draws this caller to recompute it, alone, while the others keep the
///    value.
/// 2. On a miss, join the key's single flight. A waiter gets the leader's stored value (decoded as
///    its own type), or its error; when the leader gave up, or the value does not decode as this
///    caller's type, it joins again.
/// 3. The leader reads the key again (a flight that just ended may have stored it); with a stampede
///    lock, takes it in the backend or polls for the value while whoever holds it computes; then
///    runs the producer, adds the value (so that a value another caller stored first wins), reads
///    it back, and releases the lock.
///
/// Every step that talks to the backend may throw; the face then calls ``abandon(_:cancelled:)``,
/// which says what to clean up (a held lock) and ends the flight with the error.
struct GetOrSet<V: CacheValue> {
    /// What the face does next.
    enum Step {
        /// Read `made` and `metaKey` in one call (`getMany`, failing open to nothing) and pass the
        /// result to ``readWithMetadata(_:)``.
        case readWithMetadata(made: String, metaKey: String)
        /// Read the key through the face's own `get` and pass the value to ``read(_:)``.
        case read
        /// Join the key's single flight and pass the role to ``joined(_:)``.
        case joinFlight
        /// Wait for `flight`'s outcome and pass it to ``flightEnded(_:)``.
        case wait(Flight)
        /// Read the made key as stored (the backend's `get`, failing open to a miss) and pass it to
        /// ``readShared(_:)``.
        case readShared
        /// Add `token` at `key` for `seconds` and pass whether it was added to ``lockTaken(_:)`` (a
        /// server that fails counts as taken: a lock that cannot be taken never stops the work).
        case takeLock(key: String, token: StoredValue, seconds: Double)
        /// Sleep for the interval (the lock holder computes meanwhile), then ``slept()``.
        case sleep(Duration)
        /// Run the producer, timing it, and pass its value to ``produced(_:took:)``.
        case produce
        /// Store `value` at the made key with `mode` and `expiry` (failing open to not stored) and
        /// pass whether it was stored to ``stored(_:)``.
        case store(StoredValue, mode: SetMode, expiry: CacheExpiry)
        /// Store the early-refresh metadata beside the value; its failure is ignored. Then
        /// ``metadataStored()``.
        case storeMetadata(key: String, StoredValue, expiry: CacheExpiry)
        /// Add the produced value through the face's own `add`, then ``added()``.
        case add(V)
        /// Release the stampede lock (compare-and-delete), then ``released()``.
        case releaseLock(HeldLock)
        /// End the flight this caller led with `outcome` (``SingleFlights/finish(_:_:_:)``), then
        /// return `value`.
        case finish(Flight, Flight.Outcome, returning: V)
        /// Return `value`.
        case done(V)
    }

    /// How an async waiter whose own task was cancelled goes on: the blocking face cannot be
    /// cancelled, so it only sees other waiters' cancellations and joins again.
    enum WaiterCancelled { case joinAgain, throwCancellation }

    private enum Phase {
        case start
        case readingWithMetadata(metaKey: String)
        case reading
        case joining
        case waiting(Flight)
        /// Early refresh: this caller recomputes a value that is still there.
        case refreshing(Flight, metaKey: String)
        /// The leader's steps; `held` is the stampede lock while it is held.
        case leading(Flight, held: HeldLock?, LeadPhase)
        case finished
    }

    private enum LeadPhase {
        case recheck
        case takingLock(HeldLock)
        case polling(until: ContinuousClock.Instant)
        case producing
        case storing(V, StoredValue, CacheExpiry, took: Duration)
        case storingMetadata(V, StoredValue)
        case readingAfterLostStore(V, StoredValue)
        case adding(V)
        case readingBack(V)
        case releasing(V, StoredValue)
    }

    private let core: CacheCore
    private let made: String
    private let timeout: CacheTimeout
    private let beta: Double?
    private let lock: StampedeLock?
    private let waiterCancelled: WaiterCancelled
    private var phase = Phase.start
    private let clock = ContinuousClock()

    init(core: CacheCore, made: String, timeout: CacheTimeout, beta: Double?, lock: StampedeLock?,
         waiterCancelled: WaiterCancelled) {
        self.core = core
        self.made = made
        self.timeout = timeout
        self.beta = beta
        self.lock = lock
        self.waiterCancelled = waiterCancelled
    }

    /// The first step.
    mutating func start() -> Step {
        if beta != nil, let metaKey = EarlyRefresh.key(for: made) {
            phase = .readingWithMetadata(metaKey: metaKey)
            return .readWithMetadata(made: made, metaKey: metaKey)
        }
        phase = .reading
        return .read
    }

    /// Step 1 with early refresh: what `getMany([made, metaKey])` found.
    mutating func readWithMetadata(_ found: [String: StoredValue]) throws -> Step {
        guard case .readingWithMetadata(let metaKey) = phase, let beta else { preconditionFailure("getOrSet: out of order") }
        guard let stored = found[made], let v: V = try core.decode(stored, key: made) else { return join() }
        // One caller recomputes before expiry; the others keep this value meanwhile.
        guard EarlyRefresh(found[metaKey])?.shouldRefresh(beta: beta) == true, let flight = core.flights.tryLead(made) else {
            return finish(v)
        }
        phase = .refreshing(flight, metaKey: metaKey)
        return .produce
    }

    /// Step 1 without early refresh: what the face's `get` returned.
    mutating func read(_ value: V?) -> Step {
        guard case .reading = phase else { preconditionFailure("getOrSet: out of order") }
        if let value { return finish(value) }
        return join()
    }

    private mutating func join() -> Step {
        phase = .joining
        return .joinFlight
    }

    /// Step 2: this caller's role in the key's flight.
    mutating func joined(_ role: SingleFlights.Role) -> Step {
        switch role {
        case .leader(let flight):
            phase = .leading(flight, held: nil, .recheck)
            return .readShared
        case .waiter(let flight):
            phase = .waiting(flight)
            return .wait(flight)
        }
    }

    /// Step 2 for a waiter: how the flight ended.
    mutating func flightEnded(_ outcome: Flight.Outcome) throws -> Step {
        switch outcome {
        case .value(let stored):
            // A stored nil asked for as a non-optional type decodes to nothing: compute our own.
            if let v: V = try core.decode(stored, key: made) { return finish(v) }
            return join()
        case .failed(let error): throw error
        case .abandoned: return join()
        case .waiterCancelled:
            if waiterCancelled == .throwCancellation { throw CancellationError() }
            return join()
        }
    }

    /// What a `readShared` step found.
    mutating func readShared(_ stored: StoredValue?) throws -> Step {
        guard case .leading(let flight, let held, let lead) = phase else { preconditionFailure("getOrSet: out of order") }
        let hit: V? = try stored.flatMap { try core.decode($0, key: made) }
        switch lead {
        case .recheck:
            if let hit, let stored { return endFlight(flight, held: held, hit, stored) }
            if let lock, let lockKey = StampedeLock.key(for: made) {
                let token = StampedeLock.token()
                phase = .leading(flight, held: nil, .takingLock(HeldLock(key: lockKey, token: token)))
                return .takeLock(key: lockKey, token: token, seconds: lock.timeoutSeconds)
            }
            return produce(flight, held: nil)
        case .polling(let deadline):
            if let hit, let stored { return endFlight(flight, held: held, hit, stored) }
            return poll(flight, until: deadline)
        case .readingAfterLostStore(let fresh, let encoded):
            if let hit, let stored { return endFlight(flight, held: held, hit, stored) }
            return endFlight(flight, held: held, fresh, encoded)
        case .readingBack(let fresh):
            if let hit, let stored { return endFlight(flight, held: held, hit, stored) }
            return endFlight(flight, held: held, fresh, try core.encode(fresh, key: made))
        default:
            preconditionFailure("getOrSet: out of order")
        }
    }

    /// A poll's sleep is over: look for the lock holder's value.
    func slept() -> Step { .readShared }

    /// Whether the stampede lock was taken.
    mutating func lockTaken(_ taken: Bool) -> Step {
        guard case .leading(let flight, _, .takingLock(let lock)) = phase, let settings = self.lock else {
            preconditionFailure("getOrSet: out of order")
        }
        if taken { return produce(flight, held: lock) }
        return poll(flight, until: clock.now + settings.wait)
    }

    private mutating func poll(_ flight: Flight, until deadline: ContinuousClock.Instant) -> Step {
        guard let settings = lock, clock.now < deadline else { return produce(flight, held: nil) }
        phase = .leading(flight, held: nil, .polling(until: deadline))
        return .sleep(settings.pollInterval)
    }

    private mutating func produce(_ flight: Flight, held: HeldLock?) -> Step {
        phase = .leading(flight, held: held, .producing)
        return .produce
    }

    /// The producer's value and how long it took.
    mutating func produced(_ fresh: V, took: Duration) throws -> Step {
        switch phase {
        case .refreshing(let flight, _):
            return try store(fresh, took: took, replacing: true, flight: flight, held: nil)
        case .leading(let flight, let held, .producing):
            if beta != nil, EarlyRefresh.key(for: made) != nil {
                return try store(fresh, took: took, replacing: false, flight: flight, held: held)
            }
            phase = .leading(flight, held: held, .adding(fresh))
            return .add(fresh)
        default:
            preconditionFailure("getOrSet: out of order")
        }
    }

    /// Early refresh stores the value itself, with its metadata beside it: `replacing` sets it (a
    /// refresh of a value that is there), else adds it.
    private mutating func store(_ fresh: V, took: Duration, replacing: Bool, flight: Flight, held: HeldLock?) throws -> Step {
        let encoded = try core.encode(fresh, key: made)
        guard case .expiry(let expiry) = core.resolve(timeout) else { return endFlight(flight, held: held, fresh, encoded) }
        phase = .leading(flight, held: held, .storing(fresh, encoded, expiry, took: took))
        return .store(encoded, mode: replacing ? .set : .add, expiry: expiry)
    }

    /// Whether a `store` step stored the value.
    mutating func stored(_ done: Bool) -> Step {
        guard case .leading(let flight, let held, .storing(let fresh, let encoded, let expiry, let took)) = phase,
              let metaKey = EarlyRefresh.key(for: made) else { preconditionFailure("getOrSet: out of order") }
        if done, case .after(let seconds) = expiry {
            let meta = EarlyRefresh(seconds: seconds, deltaMs: Double(took.components.seconds) * 1000 + Double(took.components.attoseconds) / 1e15)
            phase = .leading(flight, held: held, .storingMetadata(fresh, encoded))
            return .storeMetadata(key: metaKey, meta.stored, expiry: expiry)
        }
        if !done {
            phase = .leading(flight, held: held, .readingAfterLostStore(fresh, encoded))
            return .readShared
        }
        return endFlight(flight, held: held, fresh, encoded)
    }

    /// The metadata was stored (or its failure ignored).
    mutating func metadataStored() -> Step {
        guard case .leading(let flight, let held, .storingMetadata(let fresh, let encoded)) = phase else {
            preconditionFailure("getOrSet: out of order")
        }
        return endFlight(flight, held: held, fresh, encoded)
    }

    /// The face's `add` is done: read back what won.
    mutating func added() -> Step {
        guard case .leading(let flight, let held, .adding(let fresh)) = phase else { preconditionFailure("getOrSet: out of order") }
        phase = .leading(flight, held: held, .readingBack(fresh))
        return .readShared
    }

    /// The lock was released.
    mutating func released() -> Step {
        guard case .leading(let flight, _, .releasing(let value, let stored)) = phase else { preconditionFailure("getOrSet: out of order") }
        phase = .finished
        return .finish(flight, .value(stored), returning: value)
    }

    /// The value is known: release the lock if one is held, then end the flight with it.
    private mutating func endFlight(_ flight: Flight, held: HeldLock?, _ value: V, _ stored: StoredValue) -> Step {
        if let held {
            phase = .leading(flight, held: nil, .releasing(value, stored))
            return .releaseLock(held)
        }
        phase = .finished
        return .finish(flight, .value(stored), returning: value)
    }

    private mutating func finish(_ value: V) -> Step {
        phase = .finished
        return .done(value)
    }

    /// A step threw `error`: the lock to release, if one is held, and the flight to end (its waiters
    /// get the error, or lead anew when this caller was cancelled). The face releases the lock, ends
    /// the flight and rethrows.
    mutating func abandon(_ error: any Error, cancelled: Bool) -> (release: HeldLock?, flight: Flight?, outcome: Flight.Outcome) {
        let outcome: Flight.Outcome = cancelled || error is CancellationError ? .abandoned : .failed(error)
        defer { phase = .finished }
        switch phase {
        case .refreshing(let flight, _): return (nil, flight, outcome)
        case .leading(let flight, let held, _): return (held, flight, outcome)
        default: return (nil, nil, outcome)
        }
    }
}
