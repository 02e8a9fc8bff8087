import AsyncHTTPClient
import Foundation
import NIOCore

/// `ahc-peer small-gets URL CONCURRENCY SECONDS`: CONCURRENCY tasks GET `URL` (reading the whole
/// body) in a loop for SECONDS, on a client allowed CONCURRENCY connections to the host, after one
/// untimed round that opens them.
///
/// `ahc-peer fanout URL COUNT ROUNDS`: COUNT GETs of `URL` at once, ROUNDS times after an untimed
/// round; the median wall time of a round.
///
/// Prints one JSON line of the shape tandem-bench prints, with `"reference": "async-http-client"`,
/// the figure in `value`, and (small-gets) the process's CPU per request over the timed part and
/// p50/p99 of one request.
@main
struct Peer {
    static func main() async {
        let args = CommandLine.arguments.dropFirst()
        do {
            switch (args.first, args.count) {
            case ("small-gets", 4):
                let a = Array(args)
                guard let concurrency = Int(a[2]), let seconds = Double(a[3]), concurrency > 0, seconds > 0 else { throw usage }
                try await smallGets(url: a[1], concurrency: concurrency, seconds: seconds)
            case ("fanout", 4):
                let a = Array(args)
                guard let count = Int(a[2]), let rounds = Int(a[3]), count > 0, rounds > 0 else { throw usage }
                try await fanOut(url: a[1], count: count, rounds: rounds)
            default:
                throw usage
            }
        } catch {
            FileHandle.standardError.write(Data("ahc-peer: \(error)\n".utf8))
            exit(1)
        }
    }

    static let usage = PeerError("usage: ahc-peer small-gets URL CONCURRENCY SECONDS | fanout URL COUNT ROUNDS")

    /// A client on async-http-client's default event-loop group (one loop per core), allowed
    /// `connections` HTTP/1.1 connections per host.
    static func client(connections: Int) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        configuration.httpVersion = .http1Only
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// One GET with its whole body read; fails unless the status is 200.
    static func get(_ client: HTTPClient, _ url: String) async throws {
        let response = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
        _ = try await response.body.collect(upTo: 16 << 20)
        guard response.status == .ok else { throw PeerError("status \(response.status.code) from \(url)") }
    }

    static func smallGets(url: String, concurrency: Int, seconds: Double) async throws {
        let client = client(connections: concurrency)
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in  // opens the connections
                for _ in 0..<concurrency { group.addTask { try await get(client, url) } }
                try await group.waitForAll()
            }
            let cpuBefore = processCPUSeconds()
            let clock = ContinuousClock()
            let start = clock.now
            let deadline = start + .milliseconds(Int(seconds * 1000))
            let (total, samples) = try await withThrowingTaskGroup(of: (Int, [Double]).self) { group in
                for _ in 0..<concurrency {
                    group.addTask {
                        var n = 0
                        var mine: [Double] = []
                        while clock.now < deadline {
                            let t0 = n & 15 == 0 ? clock.now : nil  // every 16th request is timed
                            try await get(client, url)
                            if let t0 { mine.append(microseconds(clock.now - t0)) }
                            n += 1
                        }
                        return (n, mine)
                    }
                }
                return try await group.reduce((0, [])) { ($0.0 + $1.0, $0.1 + $1.1) }
            }
            let elapsed = microseconds(clock.now - start) / 1e6
            let cpu = processCPUSeconds() - cpuBefore
            let latencies = samples.sorted()
            try await client.shutdown()
            print(json([
                "scenario": "http-small-gets", "reference": "async-http-client", "unit": "ops/s",
                "value": Double(total) / elapsed, "cpu_us_per_op": cpu / Double(max(total, 1)) * 1e6,
                "p50_us": percentile(latencies, 0.50), "p99_us": percentile(latencies, 0.99),
            ]))
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    static func fanOut(url: String, count: Int, rounds: Int) async throws {
        let client = client(connections: count)
        do {
            var walls: [Double] = []
            let clock = ContinuousClock()
            for round in 0...rounds {  // round 0 opens the connections
                let start = clock.now
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<count { group.addTask { try await get(client, url) } }
                    try await group.waitForAll()
                }
                if round > 0 { walls.append(microseconds(clock.now - start) / 1e6) }
            }
            try await client.shutdown()
            print(json(["scenario": "http-fanout-delay", "reference": "async-http-client", "unit": "s",
                        "value": percentile(walls.sorted(), 0.5)]))
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    static func microseconds(_ d: Duration) -> Double {
        Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
    }

    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
    }

    /// User + system CPU time of this process (all threads), in seconds.
    static func processCPUSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }

    static func json(_ fields: [String: any Sendable]) -> String {
        let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
        return data.map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

struct PeerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
